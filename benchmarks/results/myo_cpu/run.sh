#!/usr/bin/env bash
# FlowRL and SAC on myoHandPoseFixed-v0 at a CPU budget: 30 k env steps, 3 seeds vmapped in one program, small networks
# (hidden 128) at the CPU suite's update-to-data ratio of 1/4 (8 envs, 2 updates per step). 8 envs, not the CPU
# suite's 32: each MyoSuite hand env holds ~80 MB (its own compiled model), and 32 x 3 training envs plus the eval
# envs took ~12 GB. Run from the repository root; logs go to benchmarks/results/myo_cpu/<algo>.log, run directories
# to runs/myo_cpu/<algo>/.
set -euo pipefail
common=(--env myoHandPoseFixed-v0 --seed 1 --num-seeds 3 --total-steps 30000 --num-envs 8 --updates-per-iteration 2
        --batch-size 256 --start-steps 2560 --log-interval 1024 --eval-interval 3000 --eval-episodes 5
        --buffer-size 100000)
nice -n 10 python flowrl_jax.py "${common[@]}" --hidden-dim 128 --run-root runs/myo_cpu/flowrl \
    > benchmarks/results/myo_cpu/flowrl.log 2>&1
nice -n 10 python sac_jax.py "${common[@]}" --actor-hidden-dim 128 --critic-hidden-dim 128 --init-temperature 0.1 \
    --run-root runs/myo_cpu/sac > benchmarks/results/myo_cpu/sac.log 2>&1
