#!/usr/bin/env bash
# One prepared check of the project on a GPU, in about 9 minutes of wall time (docs/gpu.md describes its outputs):
#   benchmarks/gpu_check.sh OUTDIR [WHEEL_DIR]
# 1. setup: installs the wheels in WHEEL_DIR (for a machine without a package registry; built by gpu_wheels.sh) into
#    $GPU_CHECK_SITE and puts them on PYTHONPATH; writes the device and the versions to versions.txt.
# 2. compile: every measurement job at once, each compiling its programs into the persistent compilation cache
#    (one process each, 16 cores compile in parallel; compile times land in the CSVs with chunks=1 / repeats=0).
# 3. timed: the same jobs one after the other, programs loaded from the cache: per E, the bare env step rate
#    (env_rate.csv) and, per algorithm, the training script with its defaults (train_rate.csv: env-steps/s,
#    updates/s, peak device memory); then per algorithm and width, the update's rate in float32 and in bfloat16 at
#    each batch size (precision_rate.csv, benchmarks/precision_throughput.py).
# 4. flagship: `python flowrl_jax.py --env humanoid-walk` for the time left, stopped by SIGTERM (the script then
#    checkpoints); its metrics.csv, eval.csv and config.json are copied to OUTDIR.
# Every stage and job has its own time budget and a failed one does not stop the next. stages.csv says how each
# ended (rc 124/137: out of time; the flagship's 143: stopped by SIGTERM as planned). Sizes and budgets come from
# these variables, so that the test suite can run the whole script on a CPU at tiny sizes:
task=${GPU_CHECK_ENV:-humanoid-walk}
num_envs=${GPU_CHECK_NUM_ENVS:-128 512 2048 4096}
algos=${GPU_CHECK_ALGOS:-flowrl sac}
chunks=${GPU_CHECK_CHUNKS:-4}                  # per timed training job; the first is not timed
env_steps=${GPU_CHECK_ENV_STEPS:-200}          # env steps per timed call of the bare env
env_repeats=${GPU_CHECK_ENV_REPEATS:-3}
flowrl_flags=${GPU_CHECK_FLOWRL_FLAGS:-}       # added to every flowrl_jax.py run, the flagship's too
sac_flags=${GPU_CHECK_SAC_FLAGS:-}
flagship_flags=${GPU_CHECK_FLAGSHIP_FLAGS:-}   # added to the flagship run only
precision_widths=${GPU_CHECK_PRECISION_WIDTHS:-256 512}  # one precision job per algorithm and width
precision_flags=${GPU_CHECK_PRECISION_FLAGS:-}  # added to every precision job (default: batch 256 and 512, both dtypes)
total_s=${GPU_CHECK_TOTAL_S:-540}              # the whole script
setup_s=${GPU_CHECK_SETUP_S:-90}
compile_s=${GPU_CHECK_COMPILE_S:-150}
timed_s=${GPU_CHECK_TIMED_S:-240}              # all timed jobs together
job_s=${GPU_CHECK_JOB_S:-45}                   # one timed job at most
reserve_s=${GPU_CHECK_RESERVE_S:-40}           # after the flagship's SIGTERM: its checkpoint, copying the files
python=${PYTHON:-python3}
site=${GPU_CHECK_SITE:-/tmp/site}

set -uo pipefail  # no -e: a failed stage must not stop the next one
if (($# < 1)); then
  sed -n '2,3p' "$0"
  exit 2
fi
mkdir -p "$1" && out=$(cd "$1" && pwd) || exit 2
wheels=${2:-}
cd "$(dirname "$0")/.." || exit 2
start=$SECONDS
log=$out/gpu_check.log
tmp=$(mktemp -d /tmp/gpu_check.XXXXXX)
export PYTHONUNBUFFERED=1
# Shared by every job, the flagship and a rerun: a program compiled once is loaded by later processes that build it.
export JAX_COMPILATION_CACHE_DIR=${JAX_COMPILATION_CACHE_DIR:-/tmp/gpu_check_xla_cache}
echo "stage,job,rc,seconds,budget_s" > "$out/stages.csv"

say() { echo "[$(date -u +%H:%M:%S) +$((SECONDS - start))s] $*" | tee -a "$log"; }
flags() { if [[ $1 == flowrl ]]; then echo "$flowrl_flags"; else echo "$sac_flags"; fi; }

# run STAGE JOB BUDGET_S SIGNAL COMMAND...: SIGNAL at BUDGET_S, SIGKILL 15 s later (the flagship: reserve_s), the
# command's output to the log, each line marked with JOB.
run() {
  local stage=$1 job=$2 budget=$3 signal=$4 began=$SECONDS kill_after=15
  shift 4
  if [[ $job == flagship ]]; then kill_after=$reserve_s; fi
  timeout -s "$signal" -k "$kill_after" "$budget" "$@" 2>&1 | sed -u "s/^/[$job] /" >> "$log"
  local rc=${PIPESTATUS[0]}
  echo "$stage,$job,$rc,$((SECONDS - began)),$budget" >> "$out/stages.csv"
  say "$stage $job: rc $rc after $((SECONDS - began)) s"
}

# The measurement jobs, one line each: NAME, KIND, then the arguments of a timed job (env, train: gpu_check.py's;
# precision: benchmarks/precision_throughput.py's).
jobs() {
  local e algo width
  for e in $num_envs; do
    echo "env-$e env --env $task --num-envs $e --steps $env_steps --out $out/env_rate.csv"
    for algo in $algos; do
      echo "$algo-$e train --algo $algo --env $task --num-envs $e --out $out/train_rate.csv -- $(flags "$algo")"
    done
  done
  for algo in $algos; do
    for width in $precision_widths; do
      echo "precision-$algo-$width precision --algos $algo --widths $width --env $task" \
        "--out $out/precision_rate.csv $precision_flags"
    done
  done
}

say "setup (budget ${setup_s} s)"
if [[ -n $wheels ]]; then
  # The same install as gpu_wheels.sh's: no registry, no dependency resolution (the bundle lists them all).
  run setup install "$setup_s" KILL "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target "$site" "$wheels"/*.whl
  export PYTHONPATH=$site${PYTHONPATH:+:$PYTHONPATH}
fi
if command -v nvidia-smi > /dev/null; then
  nvidia-smi > "$out/versions.txt" 2>&1
else
  echo "no nvidia-smi" > "$out/versions.txt"
fi
run setup versions 60 KILL "$python" benchmarks/gpu_check.py versions
grep '^\[versions\] ' "$log" | sed 's/^\[versions\] //' >> "$out/versions.txt"

say "compile: every job at once (budget ${compile_s} s)"
# Many processes share the GPU here: each allocates as it goes instead of taking 75 % of the memory up front.
while read -r name kind args; do
  case $kind in
    env)
      XLA_PYTHON_CLIENT_PREALLOCATE=false run compile "$name" "$compile_s" KILL \
        "$python" benchmarks/gpu_check.py env $args --repeats 0 & ;;
    train)
      # The run root must be new and empty per job: the job finds its metrics.csv there.
      XLA_PYTHON_CLIENT_PREALLOCATE=false run compile "$name" "$compile_s" KILL \
        "$python" benchmarks/gpu_check.py train --chunks 1 --run-root "$tmp/compile-$name" $args & ;;
    precision)
      XLA_PYTHON_CLIENT_PREALLOCATE=false run compile "$name" "$compile_s" KILL \
        "$python" benchmarks/precision_throughput.py $args --repeats 0 & ;;
  esac
done < <(jobs)
wait

timed_end=$((SECONDS + timed_s))
say "timed: one job at a time (budget ${timed_s} s, ${job_s} s a job)"
while read -r name kind args; do
  budget=$((timed_end - SECONDS < job_s ? timed_end - SECONDS : job_s))
  if ((budget < 10)); then
    echo "timed,$name,skipped,0,$budget" >> "$out/stages.csv"
    say "timed $name: skipped, out of time"
    continue
  fi
  case $kind in
    env) run timed "$name" "$budget" KILL "$python" benchmarks/gpu_check.py env $args --repeats "$env_repeats" ;;
    train) run timed "$name" "$budget" KILL \
      "$python" benchmarks/gpu_check.py train --chunks "$chunks" --run-root "$tmp/timed-$name" $args ;;
    precision) run timed "$name" "$budget" KILL "$python" benchmarks/precision_throughput.py $args ;;
  esac
done < <(jobs)

flagship_s=$((total_s - (SECONDS - start) - reserve_s))
say "flagship: python flowrl_jax.py --env $task for ${flagship_s} s"
if ((flagship_s >= 30)); then
  # SIGTERM: the script finishes its chunk, checkpoints and exits with 143.
  run flagship flagship "$flagship_s" TERM "$python" flowrl_jax.py --env "$task" --run-root "$tmp/flagship" \
    $flowrl_flags $flagship_flags
  for name in metrics.csv eval.csv config.json; do
    found=$(ls "$tmp"/flagship/*/"$name" 2>/dev/null | head -n 1)
    if [[ -n $found ]]; then cp "$found" "$out/flagship_$name"; fi
  done
else
  echo "flagship,flagship,skipped,0,$flagship_s" >> "$out/stages.csv"
fi

say "done in $((SECONDS - start)) s; outputs in $out"
# A few MB at most: keep the head and the tail of a longer log.
if (($(stat -c %s "$log") > 4000000)); then
  { head -c 1000000 "$log"; echo; echo "[... cut ...]"; tail -c 2000000 "$log"; } > "$tmp/log" && mv "$tmp/log" "$log"
fi
rm -rf "$tmp/flagship" "$tmp"/compile-* "$tmp"/timed-*
