#!/bin/bash
# deepdist against PyTorch on the same task, interleaved A B A B in one run so that
# the machine's drift hits both. From the project root of a clone:
#   bash bench/peers/side_by_side.sh [ROUNDS] [JOB.toml ...]
# It builds the release binary, installs the peer (setup.sh) and obtains MNIST
# (`deepdist data fetch`) when they are missing.
# Default jobs: jobs/mnist-mlp.toml and jobs/mnist-mlp-sync.toml, each with
# `deepdist local JOB --executors ${EXECUTORS:-2}`; the peer is one PyTorch process with
# 2 threads, on the job's own recipe (Nesterov, decay, weight decay, parameter average:
# `--recipe deepdist`) so that the ratio measures the system, not the recipe, and on the
# usual untuned one (SGD lr 0.05, momentum 0.9, batch 128: `--recipe plain`);
# PEER_RECIPES chooses (default "deepdist plain"). The f32 GEMM peak on 2 threads is
# printed before and after, since absolute figures mean little without it.
# A job with conv2d layers (jobs/mnist-cnn.toml) is run against the LeNet peer instead,
# its recipe flags read from the job, for PEER_EPOCHS epochs (default 8). The peer
# follows the first job given, so give jobs of one kind (MLP or LeNet) per run.
# Prints one JSON line per run, then medians and the ratios deepdist / PyTorch:
# t = training seconds to the first epoch at the job's `train.target_accuracy` (default
# 0.98) in test accuracy; sps = samples/s.
set -u
ROUNDS=${1:-3}; shift || true
JOBS=("$@"); [ ${#JOBS[@]} -gt 0 ] || JOBS=(jobs/mnist-mlp.toml jobs/mnist-mlp-sync.toml)
HERE=$(cd "$(dirname "$0")" && pwd); ROOT=$PWD
DD=$ROOT/target/release/deepdist; V=${PEERS_VENV:-/tmp/venv-torch}
(cd "$ROOT" && cargo build --release -q) || { echo "the release build failed"; exit 1; }
"$V/bin/python" -c "import torch" 2>/dev/null || bash "$HERE/setup.sh" || exit 1
export DEEPDIST_DATA=${DEEPDIST_DATA:-${XDG_CACHE_HOME:-$HOME/.cache}/deepdist}
"$DD" data fetch mnist --data-dir "$DEEPDIST_DATA" >/dev/null || { echo "cannot obtain MNIST"; exit 1; }
export MNIST_DIR=${MNIST_DIR:-$DEEPDIST_DATA/mnist}
peak() { "$DD" bench --threads 2 --trials 3 2>/dev/null | grep -m1 'sgemm' | awk -F'|' '{print "GEMM peak, 2 threads: " $5 " GFLOP/s"}'; }
W=$(mktemp -d)
job_target() { python3 -c "import sys, tomllib; print(tomllib.load(open(sys.argv[1], 'rb')).get('train', {}).get('target_accuracy', 0.98))" "$1"; }
is_cnn() { grep -q 'type *= *"conv2d"' "$1"; }
dd_run() {  # JOB TAG
  local d; d=$(mktemp -d -p "$W"); cp "$ROOT/$1" "$d/job.toml"
  (cd "$d" && "$DD" local job.toml --executors "${EXECUTORS:-2}" >run.log 2>&1) || { echo "{\"run\":\"$2\",\"error\":\"see $d/run.log\"}"; return; }
  python3 - "$d" "$2" "$(job_target "$ROOT/$1")" <<'PY'
import json, glob, sys
f = glob.glob(sys.argv[1] + '/runs/*/metrics.jsonl')[0]
rs = [json.loads(l) for l in open(f) if l.strip()]
rs = [r for r in rs if r.get('test_accuracy') is not None]
t = next((r['train_s'] for r in rs if r['test_accuracy'] >= float(sys.argv[3])), None)
sps = sorted(r['samples_per_s'] for r in rs[1:] or rs)
print(json.dumps(dict(run=sys.argv[2], t=t, sps=round(sps[len(sps) // 2]), final=round(rs[-1]['test_accuracy'], 4))))
PY
}
# The LeNet peer's flags for the job's own recipe (`deepdist`) or its defaults (`plain`).
cnn_flags() {  # JOB RECIPE
  python3 - "$1" "$2" <<'PY'
import sys, tomllib
job = tomllib.load(open(sys.argv[1], 'rb'))
t, o = job.get('train', {}), job.get('optimizer', {})
flags = [f"--target {t.get('target_accuracy', 0.99)}"]
if sys.argv[2] == 'deepdist':
    flags += [f"--lr {o.get('lr', 0.01)}", f"--momentum {o.get('momentum', 0.0)}", f"--batch {t.get('batch_size', 128)}",
              f"--lr-decay {o.get('lr_decay', 1.0)}", f"--weight-decay {o.get('weight_decay', 0.0)}",
              f"--ema {o.get('average', 0.0)}", f"--ema-every {t.get('n_push', 1)}",
              f"--warmup-steps {o.get('warmup_steps', 0)}"]
    flags += ["--nesterov"] if o.get('nesterov') else []
print(' '.join(flags))
PY
}
torch_run() {  # JOB RECIPE
  local tag=pytorch; [ "$2" = plain ] || tag=pytorch-$2
  if is_cnn "$ROOT/$1"; then
    # shellcheck disable=SC2046
    "$V/bin/python" "$HERE/train_cnn_torch.py" --threads 2 --epochs "${PEER_EPOCHS:-8}" $(cnn_flags "$ROOT/$1" "$2") 2>/dev/null \
      | grep summary | python3 -c "
import json, sys; s = json.loads(sys.stdin.read())
print(json.dumps(dict(run='$tag-lenet', t=s['time_to_target_s'], sps=s['samples_per_s_median'], final=s['final_test_acc'])))"
  else
    "$V/bin/python" "$HERE/train_mlp_torch.py" --threads 2 --epochs 8 --recipe "$2" 2>/dev/null | grep summary | python3 -c "
import json, sys; s = json.loads(sys.stdin.read())
print(json.dumps(dict(run='$tag', t=s['time_to_98_s'], sps=s['samples_per_s_median'], final=s['final_test_acc'])))"
  fi
}
peak
for i in $(seq "$ROUNDS"); do
  for j in "${JOBS[@]}"; do dd_run "$j" "$(basename "$j" .toml)"; done
  # The peer takes the first job's network and recipe: one kind of job per run.
  for r in ${PEER_RECIPES:-deepdist plain}; do torch_run "${JOBS[0]}" "$r"; done
done | tee "$W/all.jsonl"
python3 - "$W/all.jsonl" <<'PY'
import json, sys, statistics as st
rs = [json.loads(l) for l in open(sys.argv[1]) if l.startswith('{')]
med = {}
for k in dict.fromkeys(r['run'] for r in rs):
    xs = [r for r in rs if r['run'] == k and 'error' not in r]
    ts = [r['t'] for r in xs if r['t'] is not None]
    med[k] = (st.median(ts) if ts else None, st.median(r['sps'] for r in xs) if xs else None)
    print(f"median {k}: time to target {med[k][0]} s ({len(ts)} of {len(xs)} runs reached it), samples/s {med[k][1]}")
peers = [k for k in med if k.startswith('pytorch')]
for pk in peers:
    p = med[pk]
    for k, (t, s) in med.items():
        if not k.startswith('pytorch') and p and t and p[0]:
            print(f"ratio {k} / {pk}: time to target {t / p[0]:.2f}, samples/s {s / p[1]:.2f}")
PY
peak
