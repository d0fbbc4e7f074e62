#!/bin/sh
# Makes what deploy/k8s/job.yaml mounts from its two Secrets, in DIR:
#   secret              the shared secret (32 random bytes, base64)
#   tls.crt, tls.key    a self-signed certificate for the driver's DNS name
#   ca.crt              the certificate executors trust (the same one)
# then prints the kubectl commands that create the Secrets from them.
# Usage: deploy/k8s/make-secrets.sh DIR [DRIVER_NAME]
set -eu
dir=${1:?usage: make-secrets.sh DIR [DRIVER_NAME]}
name=${2:-deepdist-0.deepdist}
mkdir -p "$dir"
umask 077
openssl rand -base64 32 >"$dir/secret"
# CA:FALSE: the certificate is its own trust anchor and the driver's leaf.
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 365 \
  -subj "/CN=$name" -addext "subjectAltName=DNS:$name" \
  -addext "basicConstraints=critical,CA:FALSE" \
  -keyout "$dir/tls.key" -out "$dir/tls.crt" 2>/dev/null
cp "$dir/tls.crt" "$dir/ca.crt"
cat <<EOC
kubectl create secret generic deepdist-secret --from-file=secret=$dir/secret
kubectl create secret generic deepdist-tls --from-file=tls.crt=$dir/tls.crt --from-file=tls.key=$dir/tls.key --from-file=ca.crt=$dir/ca.crt
EOC
