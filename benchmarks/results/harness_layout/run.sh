#!/usr/bin/env bash
# The four runs compared before and after the harness layout change: bash run.sh CODE_DIR LABEL runs each command on
# the code in CODE_DIR (with its own .venv) and copies each run's eval.csv here as <name>_<LABEL>_eval.csv.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
code=$(cd "$1" && pwd); label=$2; py="$code/.venv/bin/python"; runs=$(mktemp -d)
cd "$code"
quick=(--env cartpole-balance --num-envs 16 --updates-per-iteration 16 --batch-size 256 --hidden-dim 128
       --start-steps 2000 --total-steps 30000 --eval-interval 2000 --log-interval 2000)
small=(--env cartpole-balance --num-envs 8 --updates-per-iteration 4 --batch-size 64 --hidden-dim 32
       --start-steps 1000 --total-steps 4000 --eval-interval 1000 --log-interval 1000 --eval-episodes 2
       --episode-length 200)
"$py" flowrl_jax.py "${quick[@]}" --run-root "$runs/quick"
"$py" flowrl_jax.py "${small[@]}" --num-seeds 2 --run-root "$runs/seeds"
"$py" flowrl_jax.py "${small[@]}" --backend dm_control --run-root "$runs/host"
"$py" sac_jax.py "${small[@]}" --backend dm_control --run-root "$runs/hostsac"
port=$((20000 + RANDOM % 20000))
for id in 0 1; do
  JAX_COORDINATOR_ADDRESS=127.0.0.1:$port JAX_NUM_PROCESSES=2 JAX_PROCESS_ID=$id \
    "$py" flowrl_jax.py "${small[@]}" --num-seeds 2 --devices 0 --run-root "$runs/processes" &
done
wait
for name in quick seeds host hostsac processes; do
  cp "$runs/$name"/*/eval.csv "$here/${name}_${label}_eval.csv"
done
