#!/bin/bash
# An interleaved A/B of two deepdist builds on this machine: `deepdist bench`
# (the GEMM peak and gradient() in turns) and the default job in local mode,
# A B A B …, so that the machine's drift hits both. Medians and ratios B / A.
#   bash bench/ab.sh A_BINARY B_BINARY [ROUNDS]
# e.g. a release build of main against one of a branch:
#   git worktree add /tmp/base main && (cd /tmp/base && cargo build --release)
#   cargo build --release && bash bench/ab.sh /tmp/base/target/release/deepdist target/release/deepdist 3
set -u
A=$(realpath "${1:?"usage: bench/ab.sh A_BINARY B_BINARY [ROUNDS]"}"); B=$(realpath "${2:?}"); ROUNDS=${3:-3}
export DEEPDIST_DATA=${DEEPDIST_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/deepdist}
"$B" data fetch mnist --data-dir "$DEEPDIST_DATA" >/dev/null || { echo "cannot obtain MNIST"; exit 1; }
W=$(mktemp -d)
bench() {  # BIN TAG: the 2-thread rows of `deepdist bench` as JSON lines
  "$1" bench --threads 2 --trials 5 2>/dev/null | awk -F'|' -v tag="$2" '/threads|---/ {next} NF > 5 {
    gsub(/^ +| +$/, "", $2); gsub(/[ %]/, "", $6); gsub(/ /, "", $4); gsub(/ /, "", $5);
    printf "{\"run\":\"%s\",\"what\":\"%s\",\"sps\":\"%s\",\"gflops\":%s,\"fraction\":%s}\n", tag, $2, $4, $5, $6 }'
}
job() {  # BIN TAG: the default job's median samples/s and its final accuracy
  local d; d=$(mktemp -d -p "$W")
  (cd "$d" && "$1" local >run.log 2>&1) || { echo "{\"run\":\"$2\",\"error\":\"see $d/run.log\"}"; return; }
  python3 - "$d" "$2" <<'PY'
import json, glob, sys
rs = [json.loads(l) for l in open(glob.glob(sys.argv[1] + '/runs/*/metrics.jsonl')[0]) if l.strip()]
sps = sorted(r['samples_per_s'] for r in rs[1:] or rs)
print(json.dumps(dict(run=sys.argv[2], what="local job", sps=round(sps[len(sps) // 2]), final=rs[-1].get('test_accuracy'))))
PY
}
for i in $(seq "$ROUNDS"); do bench "$A" A; bench "$B" B; job "$A" A; job "$B" B; done | tee "$W/all.jsonl"
python3 - "$W/all.jsonl" <<'PY'
import json, sys, statistics as st
rs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{') and 'error' not in l]
for what in dict.fromkeys(r['what'] for r in rs):
    def med(tag, key):
        xs = [float(r[key]) for r in rs if r['what'] == what and r['run'] == tag and r.get(key) not in (None, '—', '')]
        return st.median(xs) if xs else None
    for key in ('sps', 'gflops', 'fraction'):
        a, b = med('A', key), med('B', key)
        if a and b:
            print(f"{what}: {key} median A {a:g}, B {b:g}, B/A {b / a:.3f}")
PY
