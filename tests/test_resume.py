"""Exact resume and determinism: a run of 2T steps equals T steps + resume + T more, bit for bit; seeds matter."""

import csv
import json
import shutil
import dataclasses
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import flowrl_jax as flowrl
from common.run import checkpoint, cli, training
from common.run.args import resolve
from tests.checkpoints import checkpoint_leaves
from tests.test_flowrl_train import TINY

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.usefixtures("reused_trainers")  # tests/conftest.py
TIMING = {"env_steps_per_s", "updates_per_s"}  # wall-clock columns: the only ones allowed to differ
# Updates start at step 16 and a checkpoint every 32 steps: the resumed half starts mid-learning, from a real buffer.
# tests/test_flowrl_train.py's tiny run (the same programs): the reference's fresh x₀ (`x0_hold=1`), as the fixture
# run that the old code wrote; the default held x₀ resumes exactly through kill -9 in tests/test_soak.py, mid-hold.
ARGS = dataclasses.replace(TINY, eval_interval=16, checkpoint_interval=32, keep_checkpoints=5)


def train(args) -> None:
    training.run(resolve(args), flowrl.make_flowrl, "flowrl")


def run(tmp_path, name, **changes) -> Path:
    root = tmp_path / name
    train(dataclasses.replace(ARGS, run_root=str(root), **changes))
    (run_dir,) = root.iterdir()
    return run_dir


def table(path: Path) -> list[dict]:
    with path.open(newline="") as f:
        return [{k: v for k, v in row.items() if k not in TIMING} for row in csv.DictReader(f)]


def leaves(run_dir: Path) -> dict:
    """Every array of the final train state, as stored (the header, which holds the config, is left out)."""
    return checkpoint_leaves(checkpoint.list_checkpoints(run_dir / "checkpoints")[-1])


def assert_same_run(a: Path, b: Path, blank_through_step: tuple[int, list[str]] = (-1, [])) -> None:
    """Two runs wrote the same rows (wall-clock columns aside) and the same final train state, bit for bit.
    blank_through_step (step, columns): b left those metrics columns empty up to that step (code that logged fewer)."""
    last_blank_step, blank = blank_through_step
    expected = [{k: "" if k in blank and int(row["step"]) <= last_blank_step else v for k, v in row.items()}
                for row in table(a / "metrics.csv")]
    assert expected == table(b / "metrics.csv")
    assert table(a / "eval.csv") == table(b / "eval.csv")
    expected, found = leaves(a), leaves(b)
    assert expected.keys() == found.keys()
    for name in expected:
        np.testing.assert_array_equal(found[name], expected[name], err_msg=name)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    return run(tmp_path_factory.mktemp("full"), "full")


def test_resume_equals_an_uninterrupted_run_bit_for_bit(tmp_path, full_run):
    half = run(tmp_path, "half", total_steps=32)
    assert [p.name for p in checkpoint.list_checkpoints(half / "checkpoints")] == ["checkpoint_000000000032.msgpack"]
    train(dataclasses.replace(ARGS, run_root=str(tmp_path / "unused"), resume=str(half)))
    assert not (tmp_path / "unused").exists()  # the resumed run continues in its own directory
    assert_same_run(full_run, half)


def test_a_run_written_before_the_harness_layout_change_resumes_exactly(tmp_path, full_run):
    """tests/fixtures/run_before_layout is ARGS run to step 32 by the code before common/ was split into core, envs
    and run (commit d4412ba): resumed by today's code, it ends as today's uninterrupted run does, bit for bit."""
    old = Path(shutil.copytree(ROOT / "tests" / "fixtures" / "run_before_layout", tmp_path / "old"))
    with (old / "metrics.csv").open(newline="") as f:
        old_columns = next(csv.reader(f))
    train(dataclasses.replace(ARGS, run_root=str(tmp_path / "unused"), resume=str(old)))
    # Metrics added since (the exploration diagnostics) extend the header; the rows the old code wrote keep theirs.
    added = [name for name in table(full_run / "metrics.csv")[0] if name not in old_columns and name not in TIMING]
    assert added == ["action_spread", "dq_da"]
    for row in table(old / "metrics.csv"):
        assert all(row[name] == "" for name in added) == (int(row["step"]) <= 32), row
    assert_same_run(full_run, old, blank_through_step=(32, added))


def test_a_run_from_before_a_flag_resumes_with_the_value_it_ran_with(tmp_path, refused):
    """The fixture run predates `--x0-hold` and drew a fresh x₀ every step: its resume keeps that
    (FlowRLConfig.VALUES_BEFORE_FLAGS), not today's default, and refuses another value."""
    old = shutil.copytree(ROOT / "tests" / "fixtures" / "run_before_layout", tmp_path / "old")
    assert "x0_hold" not in json.loads((old / "config.json").read_text())
    flags = cli.script_args(flowrl.FlowRLConfig)
    assert flags().x0_hold != 1
    assert cli.parse_args(flags, flowrl.make_flowrl, ["--resume", str(old)]).config.x0_hold == 1
    error = refused(flags, flowrl.make_flowrl, ["--resume", str(old), "--x0-hold", "50"])
    assert "--x0-hold: 1 in the run, 50 now" in error


def test_same_seed_repeats_and_another_seed_differs(tmp_path, full_run):
    again = run(tmp_path, "again")
    other = run(tmp_path, "other", seed=2)
    assert table(again / "metrics.csv") == table(full_run / "metrics.csv")
    assert table(other / "metrics.csv") != table(full_run / "metrics.csv")


def test_resume_refuses_incompatible_flags_and_lists_them(full_run):
    result = subprocess.run([sys.executable, "flowrl_jax.py", "--resume", str(full_run), "--hidden-dim", "64",
                             "--env", "cheetah-run", "--total-steps", "128"],
                            cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert result.returncode == 2
    assert "--hidden-dim: 32 in the run, 64 now" in result.stderr
    assert "--env: 'cartpole-balance' in the run, 'cheetah-run' now" in result.stderr
    assert "total-steps" not in result.stderr  # safe to change


def test_a_corrupt_newest_checkpoint_is_refused_and_the_previous_one_can_be_named(tmp_path, full_run):
    run_dir = Path(shutil.copytree(full_run, tmp_path / full_run.name))
    older, newest = checkpoint.list_checkpoints(run_dir / "checkpoints")[-2:]
    newest.write_bytes(newest.read_bytes()[:-1000])  # a write cut short by a full disk or a kill
    refused = subprocess.run([sys.executable, "flowrl_jax.py", "--resume", str(run_dir), "--total-steps", "72"],
                             cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert refused.returncode == 2
    assert "refusing to resume from a corrupt checkpoint" in refused.stderr and newest.name in refused.stderr
    assert f"--resume {older}" in refused.stderr
    # Naming the good checkpoint explicitly continues from it.
    train(dataclasses.replace(ARGS, total_steps=72, resume=str(older)))
    assert [int(row["step"]) for row in table(run_dir / "metrics.csv")] == list(range(4, 76, 4))
