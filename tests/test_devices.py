"""Several devices and several processes (common.core.layout, common.run.processes), on forced CPU devices and two
local processes: each placement computes what one device computes, and the flags are checked before anything compiles.
CPU "devices" share the same cores, so these tests say nothing of speed (benchmarks/throughput.py does)."""

import csv
import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from common.run import checkpoint, cli
from tests import minimal_ddpg as ddpg

ROOT = Path(__file__).resolve().parents[1]
FORCED = {"XLA_FLAGS": "--xla_force_host_platform_device_count=4"}
# Float tolerance: the split programs reduce in another order than the whole one (seen: ≤ 1e-6 after 5 chunks).
TOLERANCE = 1e-4


def run(args: list[str], extra_env: dict | None = None, timeout: int = 900) -> subprocess.CompletedProcess:
    env = dict(os.environ, **(extra_env or {}))
    return subprocess.run([sys.executable, *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout, env=env)


@pytest.fixture(scope="module")
def findings() -> dict:
    result = run(["-m", "tests.placement_worker"], FORCED)
    assert result.returncode == 0, result.stderr[-3000:]
    line = next(line for line in result.stdout.splitlines() if line.startswith("FINDINGS "))
    return json.loads(line.removeprefix("FINDINGS "))


def test_seeds_split_over_devices_compute_what_one_device_computes(findings):
    seeds = findings["seeds"]
    assert seeds["state"] < TOLERANCE and seeds["metrics"] < TOLERANCE and seeds["returns"] < TOLERANCE
    # Really split: every device holds one seed's replay (and networks); the seeds differ.
    assert seeds["replay_devices"] == 4 and seeds["replay_shard_shape"][0] == 1
    assert seeds["params_devices"] == 4 and seeds["seeds_differ"]
    # The NaN check names the one seed (on the last device) whose parameters were poisoned.
    assert seeds["nan_check"].startswith("non-finite network parameters (seed 4)"), seeds["nan_check"]


def test_data_parallel_equals_one_device_drawing_the_same_global_batch(findings):
    """The one-device reference is the same program unsplit: 4 replay shards (shard k holds envs 2k, 2k+1), each
    update drawing 4 rows from each shard with the shard's own key (common.core.chunk.sample_batch)."""
    data = findings["data"]
    assert data["updates"] > 0 and data["state"] < TOLERANCE and data["metrics"] < TOLERANCE
    assert data["replay_shape"] == [4, 64, 2]  # 4 shards × 256 / 4 rows × the toy env's 2 observations
    assert data["replay_devices"] == 4 and data["env_devices"] == 4 and data["params_replicated"]


def test_the_replica_check_finds_a_copy_that_diverged(findings):
    assert "a planted divergence" in findings["data"]["caught"] and "differs" in findings["data"]["caught"]


SMALL = ["--env=cartpole-balance", "--num-envs=4", "--updates-per-iteration=1", "--batch-size=16",
         "--start-steps=16", "--hidden-dim=16", "--log-interval=8", "--total-steps=48", "--eval-interval=24",
         "--eval-episodes=2", "--episode-length=20", "--checkpoint-interval=24", "--buffer-size=256"]


@pytest.mark.parametrize("flags, message", [
    (["--devices=3", "--num-seeds=4"], "--num-seeds 4 does not split over 3 devices; use 3 or 6"),
    (["--devices=8", "--num-seeds=8"], "--devices 8: only 4 devices"),
    (["--devices=2"], "add --data-parallel"),
    (["--devices=4", "--data-parallel", "--num-envs=6"], "--num-envs 6 does not split over 4 devices"),
    (["--devices=2", "--num-seeds=2", "--env=cheetah-run", "--backend=dm_control"], "dm_control envs step on the host"),
], ids=["seeds-remainder", "too-many", "one-seed", "envs-remainder", "host-backend"])
def test_placement_flags_are_refused_before_anything_compiles(tmp_path, flags, message):
    result = run(["-m", "tests.minimal_ddpg", *SMALL, *flags, f"--run-root={tmp_path}"], FORCED, timeout=120)
    assert result.returncode == 2 and message in result.stderr, result.stderr[-2000:]
    assert "compiling" not in result.stderr and not any(tmp_path.iterdir())


def rows(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def numbers(table: list[dict], columns: tuple[str, ...]) -> np.ndarray:
    return np.array([[float(row[c]) for c in columns] for row in table])


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_two_processes(flags: list[str]) -> list[subprocess.Popen]:
    """The same command in two processes of one CPU device each, joined through jax.distributed over loopback; the
    envs are tests/toy_env.py's (the test below checks the processes' mechanics; the data-parallel test after it
    places MJX's env state)."""
    address = f"127.0.0.1:{free_port()}"
    env = [dict(os.environ, JAX_COORDINATOR_ADDRESS=address, JAX_NUM_PROCESSES="2", JAX_PROCESS_ID=str(index))
           for index in range(2)]
    return [subprocess.Popen([sys.executable, "-m", "tests.toy_cli", *flags], cwd=ROOT, env=env[index],
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for index in range(2)]


def finished(started: list[subprocess.Popen]) -> list[subprocess.CompletedProcess]:
    results = []
    for process in started:
        stdout, stderr = process.communicate(timeout=900)
        results.append(subprocess.CompletedProcess(process.args, process.returncode, stdout, stderr))
    return results


def two_processes(flags: list[str]) -> list[subprocess.CompletedProcess]:
    return finished(start_two_processes(flags))


def test_two_processes_wait_for_a_late_one_stop_together_and_resume_to_what_one_process_computes(tmp_path):
    """Two processes train with process 1 frozen for longer than gloo waits for a peer (30 s) while both compile,
    as a slow host would be, and a SIGTERM pending for it: both stop after the first chunk with a checkpoint. Two
    processes resume that run to the end, which equals one process with two devices."""
    placement = ["--devices=0", "--num-seeds=2"]
    # The one-process run trains while the two processes wait for each other (the CPU is mostly idle then).
    one_started = subprocess.Popen(
        [sys.executable, "-m", "tests.toy_cli", *SMALL, *placement, f"--run-root={tmp_path / 'one'}"], cwd=ROOT,
        env=dict(os.environ, XLA_FLAGS="--xla_force_host_platform_device_count=2"), stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True)
    started = start_two_processes([*SMALL, *placement, f"--run-root={tmp_path / 'two'}"])
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not (tmp_path / "two").is_dir() and started[0].poll() is None:
        time.sleep(0.05)
    started[1].send_signal(signal.SIGSTOP)  # the run directory exists; nothing has compiled yet
    started[1].send_signal(signal.SIGTERM)  # to process 1 only, which writes nothing: delivered when it wakes
    time.sleep(40)
    started[1].send_signal(signal.SIGCONT)
    stopped = finished(started)
    assert [r.returncode for r in stopped] == [143, 143], stopped[0].stderr[-3000:] + stopped[1].stderr[-3000:]
    assert "stopped by SIGTERM at env step 8" in stopped[1].stderr
    assert "stopped with the run's other processes at env step 8" in stopped[0].stderr
    (two_dir,) = (tmp_path / "two").iterdir()  # process 1 wrote no run directory of its own
    (saved,) = checkpoint.list_checkpoints(two_dir / "checkpoints")
    assert saved.name == "checkpoint_000000000008.msgpack"
    config = json.loads((two_dir / "config.json").read_text())
    assert config["process_count"] == 2 and config["device_count"] == 2 and config["mesh_shape"] == {"seeds": 2}

    (one,) = finished([one_started])
    assert one.returncode == 0, one.stderr[-3000:]
    (one_dir,) = (tmp_path / "one").iterdir()

    rest = two_processes([f"--resume={two_dir}"])
    assert [r.returncode for r in rest] == [0, 0], rest[0].stderr[-3000:] + rest[1].stderr[-3000:]
    assert "resuming" in rest[0].stdout and "resuming" not in rest[1].stdout  # process 0 alone speaks and writes
    for name, columns in (("eval.csv", ("step", "seed", "return_mean")),
                          ("metrics.csv", ("step", "seed", "critic_loss", "actor_loss"))):
        expected, found = rows(one_dir / name), rows(two_dir / name)
        assert len(found) == len(expected) == (4 if name == "eval.csv" else 12), name
        np.testing.assert_allclose(numbers(found, columns), numbers(expected, columns), rtol=TOLERANCE,
                                   atol=TOLERANCE, err_msg=name)


def test_a_data_parallel_run_resumes_exactly_and_refuses_another_device_count(tmp_path, refused):
    placement = ["--devices=2", "--data-parallel"]
    full = run(["-m", "tests.minimal_ddpg", *SMALL, *placement, f"--run-root={tmp_path / 'full'}"], FORCED)
    assert full.returncode == 0, full.stderr[-3000:]
    (full_dir,) = (tmp_path / "full").iterdir()
    half = run(["-m", "tests.minimal_ddpg", *SMALL, *placement, "--total-steps=24",
                f"--run-root={tmp_path / 'half'}"], FORCED)
    assert half.returncode == 0, half.stderr[-3000:]
    (half_dir,) = (tmp_path / "half").iterdir()

    # The command line's check, in this process: the forced devices play no part in it.
    other = refused(cli.script_args(ddpg.DDPGConfig), ddpg.make_ddpg, [f"--resume={half_dir}", "--devices=4"])
    assert "--devices: 2 in the run, 4 now" in other
    rest = run(["-m", "tests.minimal_ddpg", f"--resume={half_dir}", "--total-steps=48"], FORCED)
    assert rest.returncode == 0, rest.stderr[-3000:]
    for name in ("eval.csv", "metrics.csv"):
        columns = ("step", "return_mean") if name == "eval.csv" else ("step", "critic_loss", "actor_loss")
        np.testing.assert_array_equal(numbers(rows(half_dir / name), columns), numbers(rows(full_dir / name), columns),
                                      err_msg=name)
    config = json.loads((half_dir / "config.json").read_text())
    assert config["placement"] == "data" and config["mesh_shape"] == {"data": 2} and config["process_count"] == 1
