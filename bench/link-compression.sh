#!/bin/bash
# Time to the default job's target accuracy behind a bandwidth limit, with and
# without compressed pushes and fetches. A driver in one network namespace, its
# executors in another, joined by one veth pair with a token-bucket filter
# (`tc … tbf`) on both ends: the driver's network card, shared by every
# executor, at RATE. Variants run interleaved (each seed: every variant in
# turn) on the same driver and executors, so the machine's drift hits all.
#   sudo bash bench/link-compression.sh [RATES] [SEEDS] [EXECUTORS]
# e.g. sudo bash bench/link-compression.sh 100mbit,1gbit 1,2,3 2
# VARIANTS overrides the variants: space-separated NAME:KEY=VALUE;KEY=VALUE
# entries, each key set in the job's [train] table (NAME alone: the job as is).
# Needs root, iproute2 and a kernel with veth and tbf. Writes
# bench/results/link-compression/<date>-<rate>.md.
set -eu
RATES=${1:-100mbit,1gbit}; SEEDS=${2:-1}; N=${3:-2}
VARIANTS=${VARIANTS:-"none fp16:compression=\"fp16\";fetch_compression=\"fp16\" topk:compression=\"topk\";fetch_compression=\"fp16\""}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/deepdist
OUT=${OUT:-$ROOT/bench/results/link-compression}
export DEEPDIST_DATA=${DEEPDIST_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/deepdist}
[ "$(id -u)" = 0 ] || { echo "link-compression needs root (network namespaces)"; exit 1; }
command -v ip >/dev/null && command -v tc >/dev/null || { echo "needs iproute2: apt-get install iproute2"; exit 1; }
(cd "$ROOT" && cargo build --release --quiet)
"$BIN" data fetch mnist --data-dir "$DEEPDIST_DATA" >/dev/null

D=ddlzd$$; E=ddlze$$; W=$(mktemp -d)
PIDS=()
. "$ROOT/bench/netns.sh"
trap net_down EXIT

mkdir -p "$OUT"
GEMM=$("$BIN" bench --threads 2 --trials 3 2>/dev/null | awk -F'|' '/sgemm/ {gsub(/ /, "", $5); print $5; exit}')
for RATE in ${RATES//,/ }; do
  net_down; PIDS=()
  net_up "$RATE" 10.78.0
  cluster_up "$N" 10.78.0 "$W/runs-$RATE"
  for SEED in ${SEEDS//,/ }; do
    for V in $VARIANTS; do
      python3 "$ROOT/bench/job_variant.py" "$ROOT/jobs/mnist-mlp.toml" "$V" "$SEED" stop_at_target=true >"$W/job.toml"
      ip netns exec "$D" "$BIN" submit "$W/job.toml" --driver 10.78.0.1:7077 --wait >"$W/submit.log" 2>&1 \
        || { cat "$W/submit.log"; exit 1; }
      echo "$RATE seed $SEED ${V%%:*}: done"
    done
  done
  python3 - "$W/runs-$RATE" "$RATE" "$N" "$GEMM" "$VARIANTS" >"$OUT/$(date +%F)-$RATE.md" <<'PY'
import glob, json, os, statistics as st, sys
runs, rate, n, gemm, variants = sys.argv[1:]
print(f"# Time to 98% behind {rate} ({n} executors, {__import__('datetime').date.today()})\n")
print(f"`bench/link-compression.sh`: `jobs/mnist-mlp.toml` ending at its 98% target, the driver and {n} one-core executors in two network namespaces joined by one veth pair rate-limited by tbf at {rate} on both ends; release build; GEMM peak {gemm} GFLOP/s on 2 threads. Variants (keys set in `[train]`): " + "; ".join(f"`{v}`" for v in variants.split()) + ".\n")
print("| variant | seed | time to 98% (s) | epochs | final accuracy | MB pushed / epoch | MB fetched / epoch |")
print("|---|---:|---:|---:|---:|---:|---:|")
rows = {}
for d in sorted(glob.glob(runs + '/*/')):
    if not os.path.exists(d + 'metrics.jsonl'):
        continue
    lines = [json.loads(l) for l in open(d + 'metrics.jsonl') if l.strip()]
    name, seed = d.rstrip('/').split('/')[-1].split('-', 1)[1].removeprefix('mnist-mlp-').rsplit('-s', 1)
    hit = next((l for l in lines if (l.get('test_accuracy') or 0) >= 0.98), None)
    t = hit['train_s'] if hit else None
    mb = lambda k: st.mean(l.get(k, 0) for l in lines) / 1e6
    rows.setdefault(name, []).append(t)
    print(f"| {name} | {seed} | {'—' if t is None else f'{t:.1f}'} | {len(lines)} | {100 * lines[-1]['test_accuracy']:.2f}% | {mb('bytes_pushed'):.1f} | {mb('bytes_fetched'):.1f} |")
base = [t for t in rows.get('none', []) if t]
print()
for name, ts in rows.items():
    ts = [t for t in ts if t]
    if ts and base:
        print(f"- {name}: median {st.median(ts):.1f} s to 98%, none / {name} = {st.median(base) / st.median(ts):.2f}×")
PY
  cat "$OUT/$(date +%F)-$RATE.md"
done
