#!/usr/bin/env bash
# The GPU kit: one command that turns a lent GPU machine's minutes into measured facts (see benchmarks/gpu/README.md).
#
#   bash benchmarks/gpu/run.sh                 # on the GPU machine (device tool: run, carry [".whl"])
#   bash benchmarks/gpu/run.sh --rehearse      # here, on CPU, tiny sizes: proves the kit before a GPU is lent
#   bash benchmarks/gpu/run.sh --only throughput,peer_brax   # a subset (e.g. what a first call had no time for)
#
# Steps in the order a user most wants them proven, each time-boxed (a step that fails or times out is recorded and
# the kit goes on; one whose minimum no longer fits the --budget is recorded as skipped). The core steps' caps fit
# the budget together (tests/test_gpu_kit.py checks it with --plan); the extra steps run in what is left.
#   setup        install the carried wheels (.whl/, benchmarks/gpu/fetch_wheels.sh) into /tmp/site; versions, devices
#   peer_brax    ppo_multiunroll vs Brax's ppo.train, official CartpoleBalance config, same steps, same GPU: SPS ratio
#   trainer_sync the three trainers' rollout and update under torch.cuda.set_sync_debug_mode("error")
#   throughput   benchmarks/env_throughput.py at 4096 envs (CartpoleBalance; CheetahRun an extra): ours vs raw
#                jit(vmap(step)) vs upstream's wrapper, interleaved
#   ppo_scale    ppo_continuous at 4096 envs: SPS
#   ppo_compile  the same with --compile --cudagraphs (rehearsal: --compile): SPS, compile time included (on the GPU
#                an extra: it does not fit the core with caps sized for a cold GPU process)
#   extras       cuda_tests (tests/test_cuda.py: devices, zero-copy, streams, errors), Go1, and the rest of the
#                throughput sweep (CheetahRun, HumanoidRun, 16384 envs), as time allows
# In GPU mode a test step in which every test was skipped (JAX sees no GPU) counts as failed, not ok.
# --plan prints the steps with their caps and minimums (seconds) and the core total against the budget, and exits.
# Results: $OUT/summary.md, $OUT/results.json, $OUT/logs.tar.gz, rewritten after every step (a killed run keeps
# what it finished). Without $OUT (here): runs/gpu_kit/<mode>/.
set -uo pipefail
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
cd "$ROOT"
MODE=gpu
BUDGET=""       # seconds for all steps; GPU: 540 (one device call may run 600 s, and the results must come back)
ONLY=""
PLAN=0
while [ $# -gt 0 ]; do
  case "$1" in
    --rehearse) MODE=rehearse ;;
    --plan) PLAN=1 ;;
    --budget) BUDGET=$2; shift ;;
    --only) ONLY=$2; shift ;;
    -h|--help) sed -n '2,25p' "$0"; exit 0 ;;
    *) echo "run.sh: unknown argument $1 (expected --rehearse, --plan, --budget SECONDS, --only STEP,STEP)" >&2; exit 2 ;;
  esac
  shift
done
[ -z "$BUDGET" ] && { [ "$MODE" = gpu ] && BUDGET=540 || BUDGET=1100; }  # the rehearsal: the same plan, CPU-sized
OUT=${OUT:-$ROOT/runs/gpu_kit/$MODE}
WORK=${GPU_KIT_WORK:-/tmp/gpu_kit_$MODE}
rm -rf "$WORK"; mkdir -p "$WORK/logs" "$OUT"
PYTHON=${PYTHON:-python3}
export PYTHONUNBUFFERED=1 PYTHONPATH="$ROOT${PYTHONPATH:+:$PYTHONPATH}"
START=$(date +%s)
echo "[]" > "$WORK/steps.json"

if [ "$MODE" = gpu ]; then
  DEVICE=cuda
  THROUGHPUT_RUNS="CartpoleBalance:4096"
  EXTRA_THROUGHPUT_RUNS="CheetahRun:4096 HumanoidRun:4096 CartpoleBalance:16384 CheetahRun:16384"
  THROUGHPUT_ARGS="--rounds 5 --steps 100"
  PEER_ARGS="--preset official --total-timesteps 9830400 --num-evals 2 --num-eval-envs 128"
  SCALE_ARGS="--num-envs 4096 --num-steps 16 --num-minibatches 4 --update-epochs 4 --total-timesteps 1310720"
  # core: setup 45 + peer_brax 2 x 130 + trainer_sync 70 + throughput 110 + ppo_scale 45 = 530; ppo_compile is an
  # extra here. Sized from the first H100 calls (docs/gpu/2026-12-06): Brax's side took 77 s, ours was at 6.9M of
  # 9.8M steps (129k SPS) when cut at 95 s; the throughput step had not printed a round at 40 s (its contenders
  # compile one after another; their compile times were not logged), so one size is core, with more time, the rest
  # extras
  CAPS="setup=45 peer_brax_each=130 trainer_sync=70 throughput_each=110 ppo_scale=45 ppo_compile=90 cuda_tests=90
    robot_go1=150"
  COMPILE_KIND=extra
  # a robot at its official scale: Go1JoystickFlatTerrain's Brax config (8192 envs, unroll 20, 32 minibatches of 256,
  # asymmetric critic, official domain randomisation), 20 updates of 163,840 env steps; GPU only (Go1's assets travel
  # in .whl/menagerie, see fetch_wheels.sh)
  ROBOT_ARGS="--env-id Go1JoystickFlatTerrain --total-timesteps 3276800 --num-evals 3 --num-eval-envs 512"
else
  DEVICE=cpu
  THROUGHPUT_RUNS="CartpoleBalance:32"
  EXTRA_THROUGHPUT_RUNS=""
  THROUGHPUT_ARGS="--rounds 2 --steps 10"
  PEER_ARGS="--preset cpu --total-timesteps 4096 --num-evals 3 --num-eval-envs 8 --trainer-arg=--num-envs=16
    --trainer-arg=--batch-size=16 --trainer-arg=--unroll-length=8 --trainer-arg=--num-minibatches=2
    --trainer-arg=--num-updates-per-batch=1 --trainer-arg=--episode-length=50 --trainer-arg=--torch-threads=1"
  SCALE_ARGS="--num-envs 16 --num-steps 32 --num-minibatches 2 --update-epochs 1 --total-timesteps 1024
    --episode-length 50 --torch-threads 1"
  # core: 60 + 2 x 200 + 120 + 120 + 120 + 200 = 1020 of the rehearsal's 1100
  CAPS="setup=60 peer_brax_each=200 trainer_sync=120 throughput_each=120 ppo_scale=120 ppo_compile=200 cuda_tests=120"
  COMPILE_KIND=core
fi
CAPS="$CAPS ${GPU_KIT_CAPS:-}"  # e.g. GPU_KIT_CAPS="throughput_each=120": later entries win
cap() { local kv v=""; for kv in $CAPS; do [ "${kv%%=*}" = "$1" ] && v=${kv#*=}; done; echo "$v"; }
wanted() { [ -z "$ONLY" ] || [[ ",$ONLY," == *",$1,"* ]]; }
minimum() { local m=$(( $1 / 2 )); [ "$m" -lt 15 ] && m=15; echo "$m"; }  # a step starts only with this much left

if [ "$PLAN" = 1 ]; then
  # one line per step in run order: name cap minimum core|extra; then the core total against the budget
  total=0
  plan_line() { echo "$1 $2 $(minimum "$2") $3"; [ "$3" = core ] && total=$((total + $2)); }
  plan_line setup "$(cap setup)" core
  for side in brax ours; do plan_line "peer_brax_$side" "$(cap peer_brax_each)" core; done
  plan_line trainer_sync "$(cap trainer_sync)" core
  for run in $THROUGHPUT_RUNS; do plan_line "throughput_${run%%:*}_${run#*:}" "$(cap throughput_each)" core; done
  plan_line ppo_scale "$(cap ppo_scale)" core
  plan_line ppo_compile "$(cap ppo_compile)" "$COMPILE_KIND"
  plan_line cuda_tests "$(cap cuda_tests)" extra
  [ "$MODE" = gpu ] && plan_line robot_go1 "$(cap robot_go1)" extra
  for run in $EXTRA_THROUGHPUT_RUNS; do plan_line "throughput_${run%%:*}_${run#*:}" "$(cap throughput_each)" extra; done
  echo "core_total $total budget $BUDGET"
  exit 0
fi

collect() {
  "$PYTHON" "$ROOT/benchmarks/gpu/collect.py" "$WORK" "$OUT" --mode "$MODE" || echo "run.sh: collect.py failed" >&2
}

# run_step NAME CAP_SECONDS COMMAND...: time-boxed, logged to $WORK/logs/NAME.log, recorded in $WORK/steps.json
run_step() {
  local name=$1 cap_s=$2; shift 2
  local left=$((BUDGET - ($(date +%s) - START)))
  local status rc=0 t0 limit=$cap_s
  [ "$left" -lt "$limit" ] && limit=$left
  if [ "$left" -lt "$(minimum "$cap_s")" ]; then
    status=skipped; echo "== $name: skipped ($left s of the budget left, it needs at least $(minimum "$cap_s") s)"
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
# pytest with a junit report; in GPU mode a run in which no test passed (all skipped: JAX sees no GPU) fails the step
gpu_pytest() {
  local xml=$1; shift
  "$PYTHON" -m pytest "$@" -p no:cacheprovider -q -ra --junitxml "$xml"; local rc=$?
  if [ "$MODE" = gpu ] && [ $rc -eq 0 ]; then
    "$PYTHON" "$ROOT/benchmarks/gpu/collect.py" --require-passed "$xml" || rc=1
  fi
  return $rc
}
export -f gpu_pytest

throughput() {
  for run in "$@"; do
    env_id=${run%%:*}; n=${run#*:}
    # shellcheck disable=SC2086
    run_step "throughput_${env_id}_${n}" "$(cap throughput_each)" "$PYTHON" benchmarks/env_throughput.py \
      --device "$DEVICE" --envs "$env_id" --num-envs "$n" --skip-first-step $THROUGHPUT_ARGS \
      --json "$WORK/throughput_${env_id}_${n}.json"
  done
}

if wanted peer_brax; then
  # one side per step, Brax first; the second resumes the first's results.json and writes the comparison
  for side in brax ours; do
    # shellcheck disable=SC2086
    run_step "peer_brax_$side" "$(cap peer_brax_each)" "$PYTHON" benchmarks/peer_brax.py --env-id CartpoleBalance \
      --seeds 1 --only "$side" $PEER_ARGS --trainer-arg=--device=$DEVICE --out "$WORK/peer_brax"
  done
fi
if wanted trainer_sync; then
  run_step trainer_sync "$(cap trainer_sync)" bash -c 'gpu_pytest "$0" tests/test_cuda.py -k trainer' \
    "$WORK/trainer_sync.xml"
fi
# shellcheck disable=SC2086
if wanted throughput; then throughput $THROUGHPUT_RUNS; fi
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
# extras, in what is left of the budget
if wanted cuda_tests; then
  run_step cuda_tests "$(cap cuda_tests)" bash -c 'gpu_pytest "$0" tests/test_cuda.py -k "not trainer"' \
    "$WORK/cuda_tests.xml"
fi
if [ "$MODE" = gpu ] && wanted robot_go1; then
  # shellcheck disable=SC2086
  PLAYGROUND_GYM_MENAGERIE_PATH="$ROOT/.whl/menagerie" run_step robot_go1 "$(cap robot_go1)" "$PYTHON" \
    cleanrl_ppo/ppo_multiunroll.py --device "$DEVICE" $ROBOT_ARGS --checkpoint-interval 0 --runs-dir "$WORK/robot_go1"
fi
# shellcheck disable=SC2086
if wanted throughput && [ -n "$EXTRA_THROUGHPUT_RUNS" ]; then throughput $EXTRA_THROUGHPUT_RUNS; fi
echo "== done in $(( $(date +%s) - START )) s: $OUT/summary.md"
cat "$OUT/summary.md"
# exit status: 1 when a step failed or timed out (skipped steps are listed in the summary but do not fail the kit)
"$PYTHON" -c "import json,sys; sys.exit(any(s['status'] in ('failed','timeout') for s in json.load(open('$WORK/steps.json'))))"
