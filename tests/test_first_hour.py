"""What a new user meets first: flags that mean the same in both scripts, defaults that adapt only when not given,
one-line errors for every kind of bad flag, and progress that starts where a resumed run is."""

import dataclasses

import pytest

import flowrl_jax as flowrl
import sac_jax as sac
from common.run import cli, training
from common.run.args import resolve
from common.run.args import RunArgs
from tests.test_robust_runs import SHORT

pytestmark = pytest.mark.usefixtures("reused_trainers")  # tests/conftest.py

FLOWRL_FLAGS, SAC_FLAGS = cli.script_args(flowrl.FlowRLConfig), cli.script_args(sac.SACConfig)


def parse(args_class, make, *argv):
    return cli.parse_args(args_class, make, list(argv))


def test_hidden_dim_sets_every_sac_width_and_the_per_network_flags_override_it():
    assert (sac.make_sac(sac.SACConfig(hidden_dim=64), 3, 2).config.actor_hidden_dim,
            sac.make_sac(sac.SACConfig(hidden_dim=64), 3, 2).config.critic_hidden_dim) == (64, 64)
    both = sac.make_sac(sac.SACConfig(hidden_dim=64, actor_hidden_dim=32), 3, 2).config
    assert (both.actor_hidden_dim, both.critic_hidden_dim) == (32, 64)
    default = sac.make_sac(sac.SACConfig(), 3, 2).config
    assert (default.actor_hidden_dim, default.critic_hidden_dim) == (256, 512)  # unchanged without the flag


def test_both_scripts_accept_every_shared_flag():
    shared = {field.name for field in dataclasses.fields(RunArgs)} | {
        "hidden_dim", "learning_rate", "gamma", "max_grad_norm", "normalize_observations"}
    for args_class in (FLOWRL_FLAGS, SAC_FLAGS):
        names = {field.name for field in dataclasses.fields(args_class)}
        assert shared <= names, shared - names


@pytest.mark.parametrize("args_class, make, argv, message", [
    (SAC_FLAGS, sac.make_sac, ["--lagrange", "0.1"], "--lagrange is a flag of flowrl_jax.py, not of"),
    (FLOWRL_FLAGS, flowrl.make_flowrl, ["--tau=0.01"], "--tau is a flag of sac_jax.py, not of"),
    (FLOWRL_FLAGS, flowrl.make_flowrl, ["--hiden-dim", "3"], "unknown flag --hiden-dim; close matches: --hidden-dim"),
    (FLOWRL_FLAGS, flowrl.make_flowrl, ["--hidden-dim", "abc"], "--hidden-dim must be an integer, got 'abc'"),
    (SAC_FLAGS, sac.make_sac, ["--learning-rate", "fast"], "--learning-rate must be a number, got 'fast'"),
    (SAC_FLAGS, sac.make_sac, ["--critic", "wide"], "--critic must be one of reference, classic, got 'wide'"),
    (FLOWRL_FLAGS, flowrl.make_flowrl, ["--resume", "runs/nope"], "--resume: runs/nope does not exist"),
])
def test_every_bad_flag_is_one_line_exit_2(refused, args_class, make, argv, message):
    error = refused(args_class, make, argv)
    assert message in error and len(error.strip().splitlines()) == 1, error


def test_the_default_batch_adapts_to_a_short_run_and_a_given_one_never_does(tmp_path, capsys, refused):
    short = ["--env", "cartpole-balance", "--total-steps", "2000", "--start-steps", "500", "--num-envs", "4",
             f"--run-root={tmp_path}"]
    run = parse(SAC_FLAGS, sac.make_sac, *short)
    assert run.args.batch_size == 500 and "using 500" in capsys.readouterr().err
    assert parse(SAC_FLAGS, sac.make_sac, *short, "--batch-size", "256").args.batch_size == 256
    assert "--batch-size must be ≤ 500" in refused(SAC_FLAGS, sac.make_sac, [*short, "--batch-size", "512"])
    assert parse(SAC_FLAGS, sac.make_sac, "--env", "cartpole-balance", f"--run-root={tmp_path}").args.batch_size == 512


def test_a_resumed_run_progress_starts_at_its_step(tmp_path, capsys):
    training.run(resolve(dataclasses.replace(SHORT, run_root=str(tmp_path))), flowrl.make_flowrl, "flowrl")
    (run_dir,) = tmp_path.iterdir()
    capsys.readouterr()
    training.run(resolve(dataclasses.replace(SHORT, resume=str(run_dir), total_steps=40)), flowrl.make_flowrl, "flowrl")
    bar = capsys.readouterr().err
    assert "32.0/40.0" in bar.split("compiling the training step")[0], bar[-1000:]  # before the first new chunk


def test_help_is_grouped_on_whole_lines_and_ends_with_examples():
    import subprocess
    import sys
    from pathlib import Path

    grouped = {name for names in cli.HELP_GROUPS.values() for name in names}
    assert sorted(grouped) == sorted(f.name for f in dataclasses.fields(RunArgs))  # each run flag in one group
    assert sum(len(names) for names in cli.HELP_GROUPS.values()) == len(grouped)
    result = subprocess.run([sys.executable, "sac_jax.py", "--help"], cwd=Path(__file__).resolve().parents[1],
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0
    text = result.stdout
    for title in (*cli.HELP_GROUPS, "algorithm hyperparameters"):
        assert f"{title.replace(' ', '-')} options" in text
    assert text.rstrip().splitlines()[-len(cli.EXAMPLES.splitlines())] == "examples:"
    assert "(default: None)" not in text and "--hidden-dim" in text
    docs = cli.field_docs(SAC_FLAGS)  # what the help shows: every docstring, its own line breaks gone
    assert set(docs) == {f.name for f in dataclasses.fields(SAC_FLAGS)} and not any("\n" in d for d in docs.values())


def test_a_curve_with_one_evaluation_shows_the_run_from_step_0(tmp_path):
    from matplotlib.figure import Figure

    from common.run.plotting import draw_learning_curve, read_eval_csv

    (tmp_path / "eval.csv").write_text("step,seed,mode,return_mean,return_std\n5000,1,stochastic,120.0,4.0\n")
    ax = Figure().add_subplot()
    draw_learning_curve(ax, read_eval_csv(tmp_path / "eval.csv"), "flowrl on cartpole-balance (playground, seed 1)")
    assert ax.get_xlim()[0] == 0 and ax.get_xlim()[1] > 5000
    assert ax.get_lines()[0].get_markersize() >= 7 and "playground" in ax.get_title()
