#!/bin/bash
# The simulator's link term against real TCP through a bandwidth limit. A driver
# in one network namespace, its executors in another, joined by one veth pair
# with a token-bucket filter (`tc … tbf`) on both ends: the driver's network
# card, shared by every executor, at RATE. For each rate and executor count,
# `deepdist bench sim-check --driver … --link RATE` runs the job on that
# cluster and simulates it (executors sharing this machine's cores, behind
# that link), and compares accuracy, staleness and samples/s.
#   sudo bash bench/link-check.sh [RATES] [EXECUTORS] [SEEDS] [EPOCHS]
# e.g. sudo bash bench/link-check.sh 250mbit,1gbit 1,2,4 1,2 3
# Needs root, iproute2 and a kernel with veth and tbf. Writes
# bench/results/link-check/<rate>-<n>/sim-check.md and a summary.md.
set -eu
RATES=${1:-250mbit,1gbit}; EXECUTORS=${2:-1,2,4}; SEEDS=${3:-1,2}; EPOCHS=${4:-3}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/deepdist
OUT=${OUT:-$ROOT/bench/results/link-check}
export DEEPDIST_DATA=${DEEPDIST_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/deepdist}
[ "$(id -u)" = 0 ] || { echo "link-check needs root (network namespaces)"; exit 1; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "needs iproute2: apt-get install iproute2"; exit 1; }
(cd "$ROOT" && cargo build --release --quiet)
"$BIN" data fetch mnist --data-dir "$DEEPDIST_DATA" >/dev/null

D=ddlcd$$; E=ddlce$$; W=$(mktemp -d)
PIDS=()
. "$ROOT/bench/netns.sh"
trap net_down EXIT

# The job, shortened: the rate, not the end of training, is what is compared.
sed -E "s/^epochs = [0-9]+/epochs = $EPOCHS/" "$ROOT/jobs/mnist-mlp.toml" >"$W/job.toml"
mkdir -p "$OUT"
for RATE in ${RATES//,/ }; do
  for N in ${EXECUTORS//,/ }; do
    net_down; PIDS=()
    net_up "$RATE" 10.77.0
    # Every executor registered before the first job (the driver deals work by rank).
    cluster_up "$N" 10.77.0 "$W/runs"
    DIR=$OUT/$RATE-$N
    ip netns exec "$D" "$BIN" bench sim-check "$W/job.toml" --driver 10.77.0.1:7077 --link "$RATE" \
      --executors "$N" --seeds "$SEEDS" --out "$DIR" --data-dir "$DEEPDIST_DATA" | tee "$W/check.txt"
  done
done
# One row per rate and count measured so far (this run's and earlier ones').
python3 - "$OUT" "$EPOCHS" >"$OUT/summary.md" <<'PY'
import glob, os, re, sys
out, epochs = sys.argv[1:]
print("# The link term against real TCP through tbf\n")
print(f"`jobs/mnist-mlp.toml` for {epochs} epochs, medians over each row's seeds; the driver and its executors (one core each) in two network namespaces joined by a veth pair rate-limited by tbf at both ends; the GEMM peak of each run in its `<rate>-<n>/sim-check.md`.\n")
print("| link | executors | samples/s real | simulated | real / simulated | mean staleness real | simulated | final accuracy real | simulated |")
print("|---|---|---|---|---|---|---|---|---|")
def key(d):
    rate, n = os.path.basename(d).rsplit('-', 1)
    m = re.match(r'([0-9.]+)(g|m)bit', rate)
    return (float(m.group(1)) * (1000 if m.group(2) == 'g' else 1), int(n)) if m else (0, 0)
for d in sorted(glob.glob(out + '/*-*/'), key=lambda d: key(d.rstrip('/'))):
    path = d + 'sim-check.md'
    if not os.path.exists(path):
        continue
    rows = [[c.strip() for c in l.split('|')[1:-1]] for l in open(path) if l.startswith('| ') and (' real ' in l or ' simulated ' in l)]
    real, sim = rows[:2]
    rate, n = os.path.basename(d.rstrip('/')).rsplit('-', 1)
    r, s = float(real[5]), float(sim[5])
    print(f"| {rate} | {n} | {r:.0f} | {s:.0f} | {r / s:.2f} | {real[3]} | {sim[3]} | {real[2].split()[-1]} | {sim[2].split()[-1]} |")
PY
cat "$OUT/summary.md"
