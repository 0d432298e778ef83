"""Presets (common.run.presets): data that replaces the defaults, under every flag given, per task and backend."""

import dataclasses
import typing

import pytest

import flowrl_jax as flowrl
import sac_jax as sac
from common.run import cli
from common.run.args import RunArgs
from common.run.presets import PLAYGROUND_10M_TASKS, PRESETS
from common.envs.tasks import all_tasks

FLOWRL_FLAGS, SAC_FLAGS = cli.script_args(flowrl.FlowRLConfig), cli.script_args(sac.SACConfig)


def parse(args_class, make, tmp_path, *argv):
    return cli.parse_args(args_class, make, [*argv, f"--run-root={tmp_path}"])


def test_every_preset_flag_is_a_flag_of_a_script_and_every_task_it_names_exists():
    choices = typing.get_args(typing.get_args(typing.get_type_hints(RunArgs)["preset"])[0])
    assert choices == tuple(PRESETS)  # --preset offers every preset, and only those
    names = {field.name for flags in (FLOWRL_FLAGS, SAC_FLAGS) for field in dataclasses.fields(flags)}
    tasks = {task.name for task in all_tasks()}
    for name, preset in PRESETS.items():
        given = set(preset.flags).union(*preset.by_backend.values(), *preset.by_task.values())
        assert given <= names, (name, given - names)
        assert set(preset.by_task) <= tasks, (name, set(preset.by_task) - tasks)
    assert set(PLAYGROUND_10M_TASKS) <= tasks


def test_the_paper_preset_is_the_reference_protocol_and_every_flag_given_wins(tmp_path):
    run = parse(FLOWRL_FLAGS, flowrl.make_flowrl, tmp_path, "--env", "cheetah-run", "--preset", "paper")
    assert (run.args.preset, run.args.num_envs, run.args.updates_per_iteration, run.args.batch_size) == (
        "paper", 1, 1, 256)
    assert (run.config.target_rate, run.config.x0_hold, run.config.expectile) == (0.95, 1, 0.9)
    given = parse(FLOWRL_FLAGS, flowrl.make_flowrl, tmp_path, "--preset=paper", "--env", "cheetah-run",
                  "--batch-size", "128", "--expectile", "0.7")
    assert (given.args.batch_size, given.config.expectile, given.args.num_envs) == (128, 0.7, 1)
    myo = parse(FLOWRL_FLAGS, flowrl.make_flowrl, tmp_path, "--env", "myoHandReachRandom-v0", "--preset", "paper")
    assert myo.config.expectile == 0.8  # the reference's recommendation for tasks it was not tuned on
    baseline = parse(SAC_FLAGS, sac.make_sac, tmp_path, "--env", "cheetah-run", "--preset", "paper")
    assert (baseline.args.num_envs, baseline.config.tau) == (1, 0.005)  # FlowRL's ρ is not SAC's flag


def test_the_playground_preset_takes_playground_s_steps_per_task(tmp_path):
    walk = parse(SAC_FLAGS, sac.make_sac, tmp_path, "--env", "humanoid-walk", "--preset", "playground-sac")
    stand = parse(SAC_FLAGS, sac.make_sac, tmp_path, "--env", "walker-stand", "--preset", "playground-sac")
    assert (walk.args.total_steps, stand.args.total_steps) == (10_000_000, 5_000_000)
    assert (walk.args.num_envs, walk.args.batch_size, walk.config.learning_rate,
            walk.config.normalize_observations) == (128, 512, 1e-3, True)


def test_an_unknown_preset_is_one_line_exit_2(tmp_path, refused):
    error = refused(FLOWRL_FLAGS, flowrl.make_flowrl, ["--preset", "fast", f"--run-root={tmp_path}"])
    assert error.strip() == "error: --preset must be one of paper, playground-sac, got 'fast'"


def test_help_names_the_presets_and_shows_a_preset_s_values_as_defaults(capsys, monkeypatch):
    monkeypatch.setattr("sys.argv", ["flowrl_jax.py"])
    with pytest.raises(SystemExit):
        cli.parse_args(FLOWRL_FLAGS, flowrl.make_flowrl, ["--preset", "paper", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert "`paper`" in shown and "`playground-sac`" in shown
    assert "--target-rate FLOAT" in shown and "(default: 0.95)" in shown
