#!/bin/bash
# Final accuracy of the default job with compressed pushes and fetches: each
# seed runs every variant in turn (`deepdist local`, release build), so the
# machine's drift hits all alike.
#   bash bench/compression-accuracy.sh [SEEDS]
# VARIANTS as in bench/link-compression.sh. Prints one Markdown table.
set -eu
SEEDS=${1:-1,2,3}
VARIANTS=${VARIANTS:-"none topk:compression=\"topk\" topk-fp16:compression=\"topk\";fetch_compression=\"fp16\" fp16:compression=\"fp16\";fetch_compression=\"fp16\""}
ROOT=$(cd "$(dirname "$0")/.." && pwd)
BIN=$ROOT/target/release/deepdist
export DEEPDIST_DATA=${DEEPDIST_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/deepdist}
(cd "$ROOT" && cargo build --release --quiet)
W=$(mktemp -d)
for SEED in ${SEEDS//,/ }; do
  for V in $VARIANTS; do
    python3 "$ROOT/bench/job_variant.py" "$ROOT/jobs/mnist-mlp.toml" "$V" "$SEED" >"$W/job.toml"
    "$BIN" local "$W/job.toml" --runs-dir "$W/runs" >"$W/last.log" 2>&1 || { cat "$W/last.log"; exit 1; }
  done
done
python3 - "$W/runs" <<'PY'
import glob, json, os, statistics as st, sys
rows = {}
print("| variant | seed | final accuracy | epochs to 98% | MB pushed / epoch (last) | MB fetched / epoch (last) |")
print("|---|---:|---:|---:|---:|---:|")
for d in sorted(glob.glob(sys.argv[1] + '/*/')):
    if not os.path.exists(d + 'metrics.jsonl'):
        continue
    lines = [json.loads(l) for l in open(d + 'metrics.jsonl') if l.strip()]
    name, seed = d.rstrip('/').split('/')[-1].split('-', 1)[1].removeprefix('mnist-mlp-').rsplit('-s', 1)
    hit = next((l['epoch'] for l in lines if (l.get('test_accuracy') or 0) >= 0.98), None)
    final = lines[-1]['test_accuracy']
    rows.setdefault(name, []).append(final)
    print(f"| {name} | {seed} | {100 * final:.2f}% | {hit or '—'} | {lines[-1]['bytes_pushed'] / 1e6:.2f} | {lines[-1]['bytes_fetched'] / 1e6:.1f} |")
print()
base = st.median(rows.get('none', [0]))
for name, xs in rows.items():
    print(f"- {name}: median {100 * st.median(xs):.2f}% ({100 * (st.median(xs) - base):+.2f} points against none)")
PY
