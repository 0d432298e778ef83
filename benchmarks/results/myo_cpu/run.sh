#!/usr/bin/env bash
# FlowRL and SAC on myoHandPoseFixed-v0 at a CPU budget: 40 k env steps, 3 seeds vmapped in one program, the CPU
# suite's small-network flags (32 envs, 8 updates per step, hidden 128). Run from the repository root; logs go to
# benchmarks/results/myo_cpu/<algo>.log, run directories to runs/myo_cpu/<algo>/.
set -euo pipefail
common=(--env myoHandPoseFixed-v0 --seed 1 --num-seeds 3 --total-steps 40000 --num-envs 32 --updates-per-iteration 8
        --batch-size 256 --start-steps 2560 --log-interval 2048 --eval-interval 4000 --eval-episodes 10
        --buffer-size 100000)
nice -n 10 python flowrl_jax.py "${common[@]}" --hidden-dim 128 --run-root runs/myo_cpu/flowrl \
    > benchmarks/results/myo_cpu/flowrl.log 2>&1
nice -n 10 python sac_jax.py "${common[@]}" --actor-hidden-dim 128 --critic-hidden-dim 128 --init-temperature 0.1 \
    --run-root runs/myo_cpu/sac > benchmarks/results/myo_cpu/sac.log 2>&1
