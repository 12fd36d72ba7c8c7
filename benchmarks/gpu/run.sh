#!/usr/bin/env bash
# The GPU kit: one command that turns a lent GPU machine's minutes into measured facts (see benchmarks/gpu/README.md).
#
#   bash benchmarks/gpu/run.sh                 # on the GPU machine (device tool: run, carry [".whl"])
#   bash benchmarks/gpu/run.sh --rehearse      # here, on CPU, tiny sizes: proves the kit before a GPU is lent
#   bash benchmarks/gpu/run.sh --only throughput,peer_brax   # a subset (e.g. what a first call had no time for)
#
# Steps, most valuable first, each time-boxed (a step that fails or times out is recorded and the kit goes on;
# one that no longer fits the --budget is recorded as skipped):
#   setup        install the carried wheels (.whl/, benchmarks/gpu/fetch_wheels.sh) into /tmp/site; versions, devices
#   cuda_tests   tests/test_cuda.py: devices, zero-copy both ways, streams, no host sync in a step loop, errors
#   trainer_sync the three trainers' rollout and update under torch.cuda.set_sync_debug_mode("error")
#   throughput   benchmarks/env_throughput.py: ours (torch) vs raw jit(vmap(step)) vs upstream's wrapper, interleaved
#   peer_brax    ppo_multiunroll vs Brax's ppo.train, official CartpoleBalance config, same steps, SPS ratio
#   ppo_scale    ppo_continuous at 4096 envs: SPS
#   ppo_compile  the same with --compile --cudagraphs (rehearsal: --compile): SPS, compile time included
# Results: $OUT/summary.md, $OUT/results.json, $OUT/logs.tar.gz, rewritten after every step (a killed run keeps
# what it finished). Without $OUT (here): runs/gpu_kit/<mode>/.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MODE=gpu
BUDGET=540      # seconds for all steps: one device call may run 600 s, and the results must still come back
ONLY=""
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) MODE=rehearse ;;
    --budget) BUDGET=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h|--help) sed -n '2,21p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (expected --rehearse, --budget SECONDS, --only STEP,STEP)" >&2; exit 2 ;;
  esac
  shift
done
OUT=${OUT:-$ROOT/runs/gpu_kit/$MODE}
WORK=${GPU_KIT_WORK:-/tmp/gpu_kit_$MODE}
rm -rf "$WORK"; mkdir -p "$WORK/logs" "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
echo "[]" > "$WORK/steps.json"

if [ "$MODE" = gpu ]; then
  DEVICE=cuda
  THROUGHPUT_RUNS="CartpoleBalance:4096 CheetahRun:4096 HumanoidRun:4096 CartpoleBalance:16384 CheetahRun:16384 HumanoidRun:16384"
  THROUGHPUT_ARGS="--rounds 5 --steps 100"
  PEER_ARGS="--preset official --total-timesteps 9830400 --num-evals 2 --num-eval-envs 128"
  SCALE_ARGS="--num-envs 4096 --num-steps 16 --num-minibatches 4 --update-epochs 4 --total-timesteps 1310720"
  CAPS="setup=90 cuda_tests=150 trainer_sync=150 throughput_each=75 peer_brax_each=120 ppo_scale=90 ppo_compile=150"
else
  DEVICE=cpu
  THROUGHPUT_RUNS="CartpoleBalance:32"
  THROUGHPUT_ARGS="--rounds 2 --steps 10"
  PEER_ARGS="--preset cpu --total-timesteps 4096 --num-evals 3 --num-eval-envs 8 --trainer-arg=--num-envs=16
    --trainer-arg=--batch-size=16 --trainer-arg=--unroll-length=8 --trainer-arg=--num-minibatches=2
    --trainer-arg=--num-updates-per-batch=1 --trainer-arg=--episode-length=50 --trainer-arg=--torch-threads=1"
  SCALE_ARGS="--num-envs 16 --num-steps 32 --num-minibatches 2 --update-epochs 1 --total-timesteps 1024
    --episode-length 50 --torch-threads 1"
  CAPS="setup=60 cuda_tests=120 trainer_sync=120 throughput_each=120 peer_brax_each=240 ppo_scale=120 ppo_compile=240"
fi
CAPS="$CAPS ${GPU_KIT_CAPS:-}"  # e.g. GPU_KIT_CAPS="throughput_each=120": later entries win
cap() { local kv v=""; for kv in $CAPS; do [ "${kv%%=*}" = "$1" ] && v=${kv#*=}; done; echo "$v"; }
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }

collect() {
  "$PYTHON" "$ROOT/benchmarks/gpu/collect.py" "$WORK" "$OUT" --mode "$MODE" || echo "run.sh: collect.py failed" >&2
}

# run_step NAME CAP_SECONDS COMMAND...: time-boxed, logged to $WORK/logs/NAME.log, recorded in $WORK/steps.json
run_step() {
  local name=$1 cap_s=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  local status rc=0 t0 limit=$cap_s
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$left" -lt 15 ]; then
    status=skipped; echo "== $name: skipped ($left s of the budget left)"
    t0=$(date +%s)
  else
    echo "== $name (at most $limit s)"
    t0=$(date +%s)
    timeout --kill-after=10 "$limit" "$@" > "$WORK/logs/$name.log" 2>&1
    rc=$?
    if [ $rc -eq 0 ]; then status=ok; elif [ $rc -eq 124 ] || [ $rc -eq 137 ]; then status=timeout; else status=failed; fi
    echo "   $status (rc $rc) in $(( $(date +%s) - t0 )) s; tail of $WORK/logs/$name.log:"
    tail -n 4 "$WORK/logs/$name.log" | sed 's/^/   | /'
  fi
  "$PYTHON" - "$WORK/steps.json" "$name" "$status" "$rc" "$(( $(date +%s) - t0 ))" "$limit" <<'EOF'
import json, sys
path, name, status, rc, seconds, limit = sys.argv[1:]
steps = json.load(open(path))
steps.append({"step": name, "status": status, "rc": int(rc), "seconds": int(seconds), "limit_s": int(limit)})
json.dump(steps, open(path, "w"), indent=1)
EOF
  collect
}

setup() {
  if [ "$MODE" = gpu ]; then
    [ -d "$ROOT/.whl" ] || { echo "no .whl/: run benchmarks/gpu/fetch_wheels.sh here and carry .whl"; return 1; }
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      "$ROOT"/.whl/*.whl || return 1
  fi
  "$PYTHON" "$ROOT/benchmarks/gpu/collect.py" --environment "$DEVICE" "$WORK/environment.json"
}
export -f setup
export MODE ROOT PYTHON DEVICE WORK
[ "$MODE" = gpu ] && export PYTHONPATH="$PYTHONPATH:/tmp/site"
# one persistent compilation cache for every step of this run (a fresh one: compile costs are part of the results)
export PLAYGROUND_GYM_CACHE_DIR="$WORK/jax_cache"

if wanted setup || [ "$MODE" = gpu ]; then run_step setup "$(cap setup)" bash -c setup; fi
if wanted cuda_tests; then
  run_step cuda_tests "$(cap cuda_tests)" "$PYTHON" -m pytest tests/test_cuda.py -k "not trainer" -p no:cacheprovider \
    -q -ra --junitxml "$WORK/cuda_tests.xml"
fi
if wanted trainer_sync; then
  run_step trainer_sync "$(cap trainer_sync)" "$PYTHON" -m pytest tests/test_cuda.py -k trainer -p no:cacheprovider \
    -q -ra --junitxml "$WORK/trainer_sync.xml"
fi
if wanted throughput; then
  for run in $THROUGHPUT_RUNS; do
    env_id=${run%%:*}; n=${run#*:}
    # shellcheck disable=SC2086
    run_step "throughput_${env_id}_${n}" "$(cap throughput_each)" "$PYTHON" benchmarks/env_throughput.py \
      --device "$DEVICE" --envs "$env_id" --num-envs "$n" --skip-first-step $THROUGHPUT_ARGS \
      --json "$WORK/throughput_${env_id}_${n}.json"
  done
fi
if wanted peer_brax; then
  # one side per step, Brax first; the second resumes the first's results.json and writes the comparison
  for side in brax ours; do
    # shellcheck disable=SC2086
    run_step "peer_brax_$side" "$(cap peer_brax_each)" "$PYTHON" benchmarks/peer_brax.py --env-id CartpoleBalance \
      --seeds 1 --only "$side" $PEER_ARGS --trainer-arg=--device=$DEVICE --out "$WORK/peer_brax"
  done
fi
if wanted ppo_scale; then
  # shellcheck disable=SC2086
  run_step ppo_scale "$(cap ppo_scale)" "$PYTHON" cleanrl_ppo/ppo_continuous.py --env-id CartpoleBalance \
    --device "$DEVICE" $SCALE_ARGS --checkpoint-interval 0 --runs-dir "$WORK/ppo_scale"
fi
if wanted ppo_compile; then
  # the same run with --compile (and CUDA graphs on the GPU): SPS against ppo_scale's, compile time included
  COMPILE_FLAGS="--compile"; [ "$MODE" = gpu ] && COMPILE_FLAGS="--compile --cudagraphs"
  # shellcheck disable=SC2086
  run_step ppo_compile "$(cap ppo_compile)" "$PYTHON" cleanrl_ppo/ppo_continuous.py --env-id CartpoleBalance \
    --device "$DEVICE" $SCALE_ARGS $COMPILE_FLAGS --checkpoint-interval 0 --runs-dir "$WORK/ppo_compile"
fi
echo "== done in $(( $(date +%s) - START )) s: $OUT/summary.md"
cat "$OUT/summary.md"
# exit status: 1 when a step failed or timed out (skipped steps are listed in the summary but do not fail the kit)
"$PYTHON" -c "import json,sys; sys.exit(any(s['status'] in ('failed','timeout') for s in json.load(open('$WORK/steps.json'))))"
