set -x
cd "$(dirname "$0")/../.." && source .venv/bin/activate
for env in cheetah-run humanoid-walk; do
  python benchmarks/throughput.py --algo flowrl --env $env --num-envs 1 256 --updates-per-iteration 1 --timed-steps 256 --repeats 3
  python benchmarks/throughput.py --algo sac --env $env --num-envs 1 256 --updates-per-iteration 1 --timed-steps 256 --repeats 2
done
python benchmarks/memory_checkpoint.py --algo flowrl --env humanoid-walk
