#!/bin/bash
# One job on this node's cores three ways, interleaved in one session so the
# machine's drift hits all three: one executor with every core; one TCP
# executor per core; one MPI executor group of one rank per core. Each run
# is a real driver process plus real executor processes on loopback.
# Run from the project root after `cargo build --release --features mpi`:
#   bash bench/mpi-three-ways.sh [ROUNDS] [JOB.toml ...]
# Prints one JSON line per run, then medians: t98 = training seconds to the
# first epoch at >= 98% test accuracy, sps = median samples/s over epochs
# after the first, in_per_epoch / out_per_epoch = bytes the driver read
# from / wrote to its executors per epoch (its /metrics counters).
set -u
ROUNDS=${1:-3}; shift || true
JOBS=("$@"); [ ${#JOBS[@]} -gt 0 ] || JOBS=(jobs/mnist-mlp.toml)
ROOT=$PWD
DD=$ROOT/target/release/deepdist
CORES=${CORES:-$(nproc)}
[ -x "$DD" ] || { echo "build first: cargo build --release --features mpi"; exit 1; }
command -v mpirun >/dev/null || { echo "mpirun is missing: apt-get install openmpi-bin"; exit 1; }
export DEEPDIST_DATA=${DEEPDIST_DATA:-$(cd "$ROOT/../shared/data" 2>/dev/null && pwd)}
W=$(mktemp -d)
PORT=${PORT:-17300}

# The driver's /api/status lists this many executors.
await_executors() {  # HTTP N
  for _ in $(seq 600); do
    n=$(curl -sf "http://$1/api/status" | python3 -c 'import json,sys; print(len(json.load(sys.stdin)["executors"]))' 2>/dev/null)
    [ "${n:-0}" -ge "$2" ] && return 0
    sleep 0.1
  done
  return 1
}

run() {  # JOB WAY
  local d p h pids=()
  d=$(mktemp -d -p "$W"); cp "$ROOT/$1" "$d/job.toml"
  PORT=$((PORT + 2)); p=127.0.0.1:$PORT; h=127.0.0.1:$((PORT + 1))
  "$DD" driver --listen "$p" --http "$h" --runs-dir "$d/runs" >"$d/driver.log" 2>&1 &
  local driver=$!
  case $2 in
    one) "$DD" executor --driver "$p" --cores "$CORES" >"$d/ex.log" 2>&1 & pids+=($!); want=1 ;;
    tcp) for i in $(seq "$CORES"); do "$DD" executor --driver "$p" --cores 1 >"$d/ex$i.log" 2>&1 & pids+=($!); done; want=$CORES ;;
    mpi) mpirun --allow-run-as-root --oversubscribe -np "$CORES" "$DD" executor --mpi --cores 1 --driver "$p" \
           >"$d/ex.log" 2>&1 & pids+=($!); want=1 ;;
  esac
  if await_executors "$h" "$want" && "$DD" submit "$d/job.toml" --driver "$p" --wait >"$d/submit.log" 2>&1; then
    curl -sf "http://$h/metrics" >"$d/metrics.txt"
    python3 - "$d" "$2" "$(basename "$1" .toml)" <<'PY'
import json, glob, sys
d, way, job = sys.argv[1:]
rs = [json.loads(l) for l in open(glob.glob(d + '/runs/*/metrics.jsonl')[0]) if l.strip()]
t = next((r['train_s'] for r in rs if r['test_accuracy'] >= 0.98), None)
sps = sorted(r['samples_per_s'] for r in rs[1:] or rs)
m = {l.split()[0]: float(l.split()[1]) for l in open(d + '/metrics.txt') if l.startswith('deepdist_executor_')}
e = len(rs)
print(json.dumps(dict(job=job, way=way, t98=t, e98=next((r['epoch'] for r in rs if r['test_accuracy'] >= 0.98), None),
                      sps=round(sps[len(sps) // 2]), final=round(rs[-1]['test_accuracy'], 4),
                      in_per_epoch=round(m['deepdist_executor_received_bytes_total'] / e),
                      out_per_epoch=round(m['deepdist_executor_sent_bytes_total'] / e))))
PY
  else
    echo "{\"job\":\"$1\",\"way\":\"$2\",\"error\":\"see $d\"}"
  fi
  kill "${pids[@]}" "$driver" 2>/dev/null; wait "${pids[@]}" "$driver" 2>/dev/null
}

for _ in $(seq "$ROUNDS"); do
  for j in "${JOBS[@]}"; do for way in one tcp mpi; do run "$j" "$way"; done; done
done | tee "$W/all.jsonl"
python3 - "$W/all.jsonl" <<'PY'
import json, sys, statistics as st
rs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
print("| job | way | time to 98% (s) | epochs to 98% | samples/s | ÷ one | bytes to the driver / epoch | bytes from it / epoch | final |")
print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
for job in dict.fromkeys(r['job'] for r in rs):
    med = {}
    for way in ('one', 'tcp', 'mpi'):
        xs = [r for r in rs if r['job'] == job and r['way'] == way and 'error' not in r]
        if not xs:
            continue
        m = lambda k: st.median(r[k] for r in xs if r[k] is not None) if any(r[k] is not None for r in xs) else None
        med[way] = {k: m(k) for k in ('t98', 'e98', 'sps', 'in_per_epoch', 'out_per_epoch', 'final')}
        one = med.get('one', {}).get('sps')
        v = med[way]
        print(f"| {job} | {way} | {v['t98'] if v['t98'] is None else round(v['t98'], 2)} | {v['e98']} | {v['sps']:.0f} | "
              f"{v['sps'] / one:.2f} | {v['in_per_epoch'] / 1e6:.1f} MB | {v['out_per_epoch'] / 1e6:.1f} MB | {v['final']:.4f} |")
PY
