"""The measurements that benchmarks/gpu_check.sh runs, one job per process, each appending one row to a CSV.

    python benchmarks/gpu_check.py versions
    python benchmarks/gpu_check.py env --env humanoid-walk --num-envs 512 --out env_rate.csv
    python benchmarks/gpu_check.py train --algo flowrl --num-envs 512 --chunks 4 --out train_rate.csv [-- FLAGS]

`train` runs the algorithm's script itself (flowrl_jax.py / sac_jax.py, its command line and defaults, FLAGS added)
in this process and watches the run's metrics.csv, which the script writes after every chunk. After `--chunks`
chunks it records the row and ends the process at once: no evaluation, no checkpoint, which cost time and measure
nothing here. The first chunk holds the compilation (and the uniform random actions of --start-steps), so the rates
come from the chunks after it; `--chunks 1` only compiles (filling the persistent compilation cache for a later
timed job). `env` times the bare batched env: E envs stepped with uniform random actions in one compiled scan.

Rows hold the device, the versions, the compile seconds (every JAX trace, lowering and compilation in the process,
from jax.monitoring; a persistent-cache hit counts its load), and the device's peak memory where JAX reports it (GPU).
Jobs may run at the same time (gpu_check.sh compiles them concurrently), so rows are appended under a file lock.
"""

import argparse
import csv
import datetime
import fcntl
import importlib.metadata
import json
import os
import platform
import runpy
import shlex
import sys
import threading
import time
from pathlib import Path

import jax

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.timing import best_seconds  # noqa: E402
from common.envs.tasks import resolve_task

SCRIPTS = {"flowrl": "flowrl_jax.py", "sac": "sac_jax.py"}
DISTRIBUTIONS = ("jax", "jaxlib", "jax-cuda13-plugin", "jax-cuda12-plugin", "flax", "optax", "chex", "numpy",
                 "mujoco", "mujoco-mjx", "brax", "playground", "tyro", "orbax-checkpoint")
TRAIN_COLUMNS = ("algo", "env", "num_envs", "updates_per_iteration", "batch_size", "chunks", "env_steps_per_chunk",
                 "timed_chunks", "env_steps_per_s", "updates_per_s", "first_chunk_s", "compile_s", "cache_hits",
                 "peak_memory_mib", "memory_limit_mib", "flags")
ENV_COLUMNS = ("env", "num_envs", "steps", "repeats", "env_steps_per_s", "compile_s", "cache_hits", "peak_memory_mib",
               "memory_limit_mib")
ORIGIN_COLUMNS = ("device", "jax", "date", "command")


class CompileClock:
    """Seconds JAX spends tracing, lowering and compiling in this process, and persistent-cache hits."""

    def __init__(self):
        self.seconds, self.cache_hits = 0.0, 0
        jax.monitoring.register_event_duration_secs_listener(self._duration)
        jax.monitoring.register_event_listener(self._event)

    def _duration(self, event: str, seconds: float, **_):
        if event.startswith("/jax/core/compile/"):
            self.seconds += seconds

    def _event(self, event: str, **_):
        if event == "/jax/compilation_cache/cache_hits":
            self.cache_hits += 1


def memory(device=None) -> dict:
    """Peak and limit of a device's memory (default: the first) in MiB; empty where JAX keeps no statistics (CPU)."""
    stats = (device or jax.local_devices()[0]).memory_stats() or {}
    mib = lambda name: round(stats[name] / 2**20, 1) if name in stats else ""  # noqa: E731
    return dict(peak_memory_mib=mib("peak_bytes_in_use"), memory_limit_mib=mib("bytes_limit"))


def origin() -> dict:
    return dict(device=f"{jax.devices()[0].platform}:{jax.devices()[0].device_kind}", jax=jax.__version__,
                date=datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
                command="python " + shlex.join(sys.argv))


def append_row(path: str, columns: tuple[str, ...], row: dict) -> None:
    """Append `row` under `columns` (+ origin) to a CSV that several processes may append to at once."""
    fields = (*columns, *ORIGIN_COLUMNS)
    row = {**row, **origin()}
    row = {name: row.get(name, "") for name in fields}
    print(row, flush=True)
    with open(path, "a", newline="") as file:
        fcntl.flock(file, fcntl.LOCK_EX)
        file.seek(0, os.SEEK_END)
        writer = csv.DictWriter(file, fieldnames=fields)
        if file.tell() == 0:
            writer.writeheader()
        writer.writerow(row)
        file.flush()


def versions() -> None:
    """Print the interpreter, the devices and the installed versions of the packages the scripts use."""
    print(f"python {platform.python_version()} ({sys.executable})")
    for name in DISTRIBUTIONS:
        try:
            print(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            print(f"{name} not installed")
    for device in jax.devices():
        print(f"device {device.id}: {device.platform} {device.device_kind} {memory(device)}")


def bare_env_rate(env: str, num_envs: int, steps: int, repeats: int, out: str) -> None:
    """env-steps/s of E envs alone: `steps` steps with uniform random actions per compiled call, best of `repeats`
    calls (0: compile only)."""
    from common.envs.playground import BatchedEnv

    clock = CompileClock()
    batched = BatchedEnv(resolve_task(env), num_envs)
    low, high = batched.action_low, batched.action_high

    def run(state, key):
        def step(state, key):
            action = jax.random.uniform(key, (batched.num_envs, batched.action_size), minval=low, maxval=high)
            return batched.step(state, action)[0], None

        return jax.lax.scan(step, state, jax.random.split(key, steps))[0]

    run = jax.jit(run, donate_argnums=0)
    holder = [jax.block_until_ready(jax.jit(batched.reset)(jax.random.key(0)))]
    keys = iter(jax.random.split(jax.random.key(1), repeats + 1))

    def call():
        holder[0] = run(holder[0], next(keys))
        return holder[0]

    jax.block_until_ready(call())  # compiles
    rate = round(num_envs * steps / best_seconds(call, repeats), 1) if repeats else ""
    append_row(out, ENV_COLUMNS, dict(env=env, num_envs=num_envs, steps=steps, repeats=repeats, env_steps_per_s=rate,
                                      compile_s=round(clock.seconds, 1), cache_hits=clock.cache_hits, **memory()))


def summarise(rows: list[dict]) -> dict:
    """The chunks' rates as one: all env steps and updates of the chunks after the first over all their seconds.
    Each metrics row is one chunk; its `step` is cumulative, so the first row's is the env steps per chunk."""
    chunk_steps = int(rows[0]["step"])
    seconds = [chunk_steps / float(row["env_steps_per_s"]) for row in rows]
    summary = dict(env_steps_per_chunk=chunk_steps, timed_chunks=len(rows) - 1, first_chunk_s=round(seconds[0], 2))
    if len(rows) > 1:
        total = sum(seconds[1:])
        summary.update(env_steps_per_s=round(chunk_steps * (len(rows) - 1) / total, 1),
                       updates_per_s=round(sum(float(row["updates_per_s"]) * s
                                               for row, s in zip(rows[1:], seconds[1:])) / total, 2))
    return summary


def train(algo: str, env: str, num_envs: int, chunks: int, out: str, run_root: str, flags: list[str]) -> None:
    """Run `algo`'s script on `env` with E envs and `flags` until it has logged `chunks` chunks; record the row."""
    clock = CompileClock()
    script = str(ROOT / SCRIPTS[algo])
    # No evaluation or checkpoint before the end, which never comes (flags given later override these).
    never = str(10**12)
    argv = [script, "--env", env, "--num-envs", str(num_envs), "--run-root", run_root, "--total-steps", never,
            "--eval-interval", never, "--checkpoint-interval", never, *flags]

    def watch():
        while True:
            time.sleep(0.2)
            metrics = next(Path(run_root).glob("*/metrics.csv"), None)
            if metrics is None:
                continue
            # only whole lines: the script may be writing the next row
            lines = [line for line in metrics.read_text().splitlines(keepends=True) if line.endswith("\n")]
            rows = list(csv.DictReader(lines))
            if len(rows) >= chunks:
                break
        config = json.loads((metrics.parent / "config.json").read_text())  # the flags as the script resolved them
        append_row(out, TRAIN_COLUMNS, dict(
            algo=algo, env=env, num_envs=num_envs, updates_per_iteration=config["updates_per_iteration"],
            batch_size=config["batch_size"], chunks=chunks, **summarise(rows[:chunks]),
            compile_s=round(clock.seconds, 1), cache_hits=clock.cache_hits, **memory(), flags=shlex.join(argv[1:])))
        os._exit(0)  # at once: the script's next chunk is not needed

    threading.Thread(target=watch, daemon=True).start()
    sys.argv = argv
    try:
        runpy.run_path(script, run_name="__main__")
    except SystemExit as stop:
        raise SystemExit(f"{SCRIPTS[algo]} stopped before {chunks} chunks (exit {stop.code})") from None
    raise SystemExit(f"{SCRIPTS[algo]} ended before {chunks} chunks")


def main() -> None:
    # Flags after `--` go to the training script unchanged.
    argv, script_flags = sys.argv[1:], []
    if "--" in argv:
        argv, script_flags = argv[:argv.index("--")], argv[argv.index("--") + 1:]
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    jobs = parser.add_subparsers(dest="job", required=True)
    jobs.add_parser("versions", help="interpreter, devices, package versions")
    env_job = jobs.add_parser("env", help="bare batched env step rate")
    train_job = jobs.add_parser("train", help="a training script's env-steps/s, updates/s, compile time, memory")
    train_job.add_argument("--algo", choices=sorted(SCRIPTS), required=True)
    train_job.add_argument("--chunks", type=int, default=4, help="chunks to run; the first is not timed (1: compile)")
    train_job.add_argument("--run-root", required=True, help="empty directory for the script's run directory")
    env_job.add_argument("--steps", type=int, default=200, help="env steps per timed call")
    env_job.add_argument("--repeats", type=int, default=3, help="timed calls, the best is reported (0: compile)")
    for job in (env_job, train_job):
        job.add_argument("--env", default="humanoid-walk")
        job.add_argument("--num-envs", type=int, required=True)
        job.add_argument("--out", required=True, help="CSV that the row is appended to")
    args = parser.parse_args(argv)
    if args.job == "versions":
        versions()
    elif args.job == "env":
        bare_env_rate(args.env, args.num_envs, args.steps, args.repeats, args.out)
    else:
        train(args.algo, args.env, args.num_envs, args.chunks, args.out, args.run_root, script_flags)


if __name__ == "__main__":
    main()
