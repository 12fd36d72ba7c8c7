#!/bin/bash
cd /tmp/wt3; export PYTHONPATH=/tmp/wt3 PLAYGROUND_GYM_MENAGERIE_PATH=/tmp/menagerie PYTHONUNBUFFERED=1
while pgrep -f "pytest -q -p no:cacheprovider -ra" >/dev/null; do sleep 10; done
PY=/work/main/.venv/bin/python
OUT=/tmp/meas/go1learn
mkdir -p $OUT
COMMON="--env-id Go1JoystickFlatTerrain --total-timesteps 983040 --num-envs 64 --eval-interval 24 --checkpoint-interval 8 --torch-threads 1"
MU="--unroll-length 20 --batch-size 64 --num-minibatches 8 --num-updates-per-batch 4 --num-resets-per-eval 0"
CO="--num-steps 160 --num-minibatches 8 --update-epochs 4"
for seed in 1 2; do
  echo "round $seed start $(date)" >> $OUT/queue.log
  timeout 1800 $PY cleanrl_ppo/ppo_multiunroll.py $COMMON $MU --seed $seed --runs-dir $OUT/ppo_multiunroll > $OUT/mu_$seed.log 2>&1 &
  timeout 1800 $PY cleanrl_ppo/ppo_continuous.py $COMMON $CO --seed $seed --runs-dir $OUT/ppo_continuous > $OUT/co_$seed.log 2>&1 &
  wait
  echo "round $seed done $(date)" >> $OUT/queue.log
done
