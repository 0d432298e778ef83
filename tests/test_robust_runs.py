"""Runs that cannot be hurt: a checkpoint knows its run, one writer per run, resources checked before any env is
built or anything compiles, checkpoints that grow with the replay, failed writes that say what survived, and host
env faults that reset the env instead of ending the run."""

import dataclasses
import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

import flowrl_jax as flowrl
from common.run import checkpoint, cli, resources, resume, training
from common.run.run_lock import lock_run_dir
from common.run.args import resolve
from common.run import callbacks
from common.envs.make import make_env
from common.envs.tasks import resolve_task
from tests.test_resume import ARGS, table

pytestmark = pytest.mark.usefixtures("reused_trainers")  # tests/conftest.py

ROOT = Path(__file__).resolve().parents[1]
SHORT = dataclasses.replace(ARGS, total_steps=32, checkpoint_interval=16, eval_interval=32)


def short_run(root: Path, **changes) -> Path:
    training.run(resolve(dataclasses.replace(SHORT, run_root=str(root), **changes)), flowrl.make_flowrl, "flowrl")
    (run_dir,) = root.iterdir()
    return run_dir


def fingerprint(run_dir: Path) -> dict:
    """Every file of a run directory and a hash of its bytes."""
    return {str(p.relative_to(run_dir)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(run_dir.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory):
    root = tmp_path_factory.mktemp("runs")
    return short_run(root / "seed1"), short_run(root / "seed2", seed=2)


def resume_exit_code(resume: Path) -> int:
    with pytest.raises(SystemExit) as stopped:
        longer = dataclasses.replace(SHORT, resume=str(resume), total_steps=48)
        training.run(resolve(longer), flowrl.make_flowrl, "flowrl")
    return stopped.value.code


def test_a_checkpoint_of_another_run_is_refused_and_nothing_of_the_run_changes(tmp_path, two_runs, capsys):
    mine = Path(shutil.copytree(two_runs[0], tmp_path / "mine"))
    theirs = checkpoint.list_checkpoints(two_runs[1] / "checkpoints")[-1]
    shutil.copy(theirs, mine / "checkpoints" / "checkpoint_000000000040.msgpack")  # newest, with a matching step?
    before = fingerprint(mine)
    assert resume_exit_code(mine) == 2
    assert "checkpoint_000000000040.msgpack" in capsys.readouterr().err
    assert fingerprint(mine) == before

    # The same file under its own step's name: its run id still differs.
    (mine / "checkpoints" / "checkpoint_000000000040.msgpack").unlink()
    shutil.copy(theirs, mine / "checkpoints" / theirs.name)
    before = fingerprint(mine)
    assert resume_exit_code(mine) == 2
    assert "belongs to another run" in capsys.readouterr().err
    assert fingerprint(mine) == before


def test_a_checkpoint_whose_step_disagrees_with_its_name_is_refused(tmp_path, two_runs, capsys):
    mine = Path(shutil.copytree(two_runs[0], tmp_path / "mine"))
    newest = checkpoint.list_checkpoints(mine / "checkpoints")[-1]
    newest.rename(newest.with_name("checkpoint_000000000024.msgpack"))
    before = fingerprint(mine)
    assert resume_exit_code(mine) == 2
    assert "saved step 32 disagrees with its name" in capsys.readouterr().err
    assert fingerprint(mine) == before


def test_a_damaged_checkpoint_is_refused_before_any_env_is_built(tmp_path, two_runs, monkeypatch, capsys):
    mine = Path(shutil.copytree(two_runs[0], tmp_path / "mine"))
    newest = checkpoint.list_checkpoints(mine / "checkpoints")[-1]
    newest.write_bytes(newest.read_bytes()[:-100])
    monkeypatch.setattr(training, "make_env", lambda *a, **k: pytest.fail("an env was built"))
    assert resume_exit_code(newest) == 2
    assert "truncated" in capsys.readouterr().err


def test_a_run_directory_has_one_writer_and_a_killed_holder_leaves_no_lock(tmp_path, two_runs):
    mine = Path(shutil.copytree(two_runs[0], tmp_path / "mine"))
    holder = lock_run_dir(mine)
    before = fingerprint(mine)
    second = subprocess.run([sys.executable, "flowrl_jax.py", "--resume", str(mine), "--total-steps", "48"], cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert second.returncode == 2 and f"pid {os.getpid()}" in second.stderr, second.stderr[-2000:]
    assert fingerprint(mine) == before
    holder.close()

    child = subprocess.Popen([sys.executable, "-c", "import sys, time; from common.run.run_lock import lock_run_dir; "
                              f"lock = lock_run_dir({str(mine)!r}); print('locked', flush=True); time.sleep(600)"],
                             cwd=ROOT, stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "locked"
    with pytest.raises(ValueError, match=f"pid {child.pid}"):
        lock_run_dir(mine)
    child.kill()  # kill -9: the OS releases the lock with the process
    child.wait()
    lock_run_dir(mine).close()


def test_checkpoints_hold_only_the_filled_replay_rows_and_resume_exactly(two_runs):
    path = checkpoint.list_checkpoints(two_runs[0] / "checkpoints")[-1]
    arrays, metadata = checkpoint.read_by_path(path)
    assert metadata["replay_rows"] == 32
    assert arrays[".buffer.data['obs']"].shape[0] == 32  # of a 1 M-row replay
    assert path.stat().st_size < 2 * 2**20
    # tests/test_resume.py checks that resuming from such a checkpoint equals the uninterrupted run bit for bit.


def test_a_train_state_that_cannot_fit_exits_2_with_the_figures(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(resources, "available_bytes", lambda device: (10 * 2**20, "test memory"))
    with pytest.raises(SystemExit) as stopped:
        short_run(tmp_path)
    assert stopped.value.code == 2
    message = capsys.readouterr().err
    assert "needs 49.9 MiB but only 10.0 MiB of test memory is free" in message
    assert not list(tmp_path.iterdir())  # nothing was created


def test_format_bytes_reads_well_at_any_size():
    assert [resources.format_bytes(n) for n in (512, 1536, 5 * 2**20, 12 * 2**30)] == [
        "512 B", "1.5 KiB", "5.0 MiB", "12.00 GiB"]


def test_a_run_root_that_is_a_file_exits_2_before_anything_is_built(tmp_path):
    (tmp_path / "root").write_text("not a directory")
    result = subprocess.run([sys.executable, "flowrl_jax.py", "--env", "cartpole-balance",
                             f"--run-root={tmp_path / 'root'}"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and "exists and is not a directory" in result.stderr
    assert "building" not in result.stdout and "Traceback" not in result.stderr


def test_a_failed_checkpoint_write_names_the_last_good_one_and_leaves_no_partial_file(tmp_path, monkeypatch, capsys):
    real_write, calls = checkpoint._write, []

    def disk_full_on_the_second_save(f, *args):
        calls.append(1)
        if len(calls) == 2:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        real_write(f, *args)

    monkeypatch.setattr(checkpoint, "_write", disk_full_on_the_second_save)
    with pytest.raises(SystemExit) as stopped:
        short_run(tmp_path)
    assert stopped.value.code == callbacks.EXIT_WRITE_FAILED
    (run_dir,) = tmp_path.iterdir()
    (good,) = checkpoint.list_checkpoints(run_dir / "checkpoints")
    message = capsys.readouterr().err
    assert "No space left on device" in message and f"the last good checkpoint is {good}" in message
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir()) == [good.name]  # no partial file
    assert [int(row["step"]) for row in table(run_dir / "metrics.csv")] == list(range(4, 36, 4))


def test_stale_temp_files_of_a_killed_save_are_removed_when_the_run_resumes(tmp_path, two_runs):
    mine = Path(shutil.copytree(two_runs[0], tmp_path / "mine"))
    stale = mine / "checkpoints" / ".checkpoint_000000000048.msgpack.12345.tmp"
    stale.write_bytes(b"partial")
    training.run(resolve(dataclasses.replace(SHORT, resume=str(mine), total_steps=36)), flowrl.make_flowrl, "flowrl")
    assert not stale.exists()


def test_an_exception_in_a_host_env_step_resets_that_env_and_is_counted(capsys):
    env = make_env(resolve_task("InvertedPendulum-v4", "gymnasium"), 3, episode_length=50)
    state = env.reset(jax.random.key(0))
    failing = env.pool.envs[1]
    calls = []

    def step_that_fails_once(action):
        calls.append(1)
        if len(calls) == 2:
            raise RuntimeError("simulator fault")
        return type(failing).step(failing, action)

    failing.step = step_that_fails_once
    step = jax.jit(env.step)
    outputs = []
    for _ in range(3):
        state, out = step(state, np.zeros((3, 1), np.float32))
        outputs.append(jax.device_get(out))
    assert [list(out.nonfinite) for out in outputs] == [[False] * 3, [False, True, False], [False] * 3]
    assert env.pool.episode_steps[1] == 1 and env.pool.episode_steps[0] == 3  # env 1 restarted
    assert "raised RuntimeError: simulator fault" in capsys.readouterr().err


def test_a_run_stopped_before_its_first_checkpoint_cannot_be_resumed_and_says_so(tmp_path, capsys):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text(json.dumps({"env": "cartpole-balance"}))  # stopped while compiling
    for missing in (False, True):  # no checkpoints/ at all, then an empty one
        with pytest.raises(SystemExit) as stopped:
            resume.open_resumed_run(str(run_dir))
        error = capsys.readouterr().err
        assert stopped.value.code == 2 and len(error.strip().splitlines()) == 1, error
        assert f"{run_dir} has no checkpoint yet" in error and "start it again without --resume" in error
        (run_dir / "checkpoints").mkdir(exist_ok=missing)


def test_a_damaged_config_is_refused_naming_the_file(tmp_path, refused):
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "config.json").write_text('{"env": "cartpole\x01-balance"}')
    error = refused(cli.script_args(flowrl.FlowRLConfig), flowrl.make_flowrl, ["--resume", str(run_dir)])
    assert len(error.strip().splitlines()) == 1, error
    assert f"{run_dir / 'config.json'} is damaged" in error


def test_a_stop_before_any_checkpoint_says_that_none_was_written_yet():
    checkpoints = callbacks.Checkpoints(None, env=None, metadata={}, layout=None, keep=1, last=None)
    guard = callbacks.Guard([1], check_replicas=False, checkpoints=checkpoints)
    metrics = {"params_finite": np.array([True]), "critic_loss": np.array([np.nan])}
    result = callbacks.ChunkResult(index=1, step=8, previous_step=0, last=False, metrics=metrics, seconds=1.0,
                                   postfix={})
    with pytest.raises(SystemExit) as stopped:
        guard(result, state=None)
    assert "non-finite critic_loss" in str(stopped.value.code)
    assert str(stopped.value.code).endswith("last good checkpoint: none was written yet")
