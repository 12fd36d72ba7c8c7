#!/bin/bash
cd /tmp/wt3; export PYTHONPATH=/tmp/wt3 PLAYGROUND_GYM_MENAGERIE_PATH=/tmp/menagerie PYTHONUNBUFFERED=1
OUT=/tmp/meas/go1learn
while ! grep -q "round 2 done" $OUT/queue.log; do sleep 10; done
echo "extend start $(date)" >> $OUT/queue.log
for d in $OUT/ppo_multiunroll/*/; do
  timeout 1800 /work/main/.venv/bin/python cleanrl_ppo/ppo_multiunroll.py --resume $d --total-timesteps 1966080 > $OUT/extend_$(basename $d).log 2>&1 &
done
wait
echo "extend done $(date)" >> $OUT/queue.log
