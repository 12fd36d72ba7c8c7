#!/bin/bash
# eager vs --compile, interleaved, from a worktree; inductor cache starts empty (the first compiled run pays the cold compile)
set -u
# run from a checkout (a git worktree keeps later edits out of the runs): WT=. OUT=/tmp/compile_ab bash THIS
WT=${WT:-$(pwd)}; PY=${PY:-python}; OUT=${OUT:-/tmp/compile_ab}
export PYTHONPATH=$WT PLAYGROUND_GYM_CACHE_DIR=$OUT.jax_cache TORCHINDUCTOR_CACHE_DIR=$OUT.inductor
rm -rf $OUT $TORCHINDUCTOR_CACHE_DIR; mkdir -p $OUT
cd $WT
# warm the env's JAX caches (both runs then start alike)
$PY cleanrl_ppo/ppo_continuous.py --total-timesteps 16384 --runs-dir $OUT/warmup > $OUT/warmup.log 2>&1
$PY cleanrl_ppo/ppo_multiunroll.py --preset cpu --total-timesteps 65536 --runs-dir $OUT/warmup > $OUT/warmup_mu.log 2>&1
for seed in 1 2 3; do
  for mode in compile eager; do
    flag=""; [ $mode = compile ] && flag="--compile"
    $PY cleanrl_ppo/ppo_continuous.py --seed $seed $flag --runs-dir $OUT/ppo_continuous_$mode > $OUT/pc_${mode}_$seed.log 2>&1
    echo "ppo_continuous seed $seed $mode rc=$?" >> $OUT/progress
  done
done
for seed in 1; do
  for mode in compile eager; do
    flag=""; [ $mode = compile ] && flag="--compile"
    $PY cleanrl_ppo/ppo_multiunroll.py --preset cpu --seed $seed $flag --runs-dir $OUT/ppo_multiunroll_$mode > $OUT/mu_${mode}_$seed.log 2>&1
    echo "ppo_multiunroll seed $seed $mode rc=$?" >> $OUT/progress
  done
done
echo done >> $OUT/progress
