set -x
cd "$(dirname "$0")/../.." && source .venv/bin/activate
for algo in flowrl sac; do
  for env in cheetah-run humanoid-walk; do
    python benchmarks/throughput.py --algo $algo --env $env --num-envs 1 256 --updates-per-iteration 1 --timed-steps 256 --repeats 2
  done
done
python benchmarks/memory_checkpoint.py --algo flowrl --env humanoid-walk
