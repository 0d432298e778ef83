"""The suite runner's planning, skipping and resuming, without training (no compiles)."""

import csv
import dataclasses
import json
import sys

import pytest

import flowrl_jax as flowrl
import sac_jax as sac
from benchmarks import run_suite
from benchmarks.algorithms import ALGORITHMS, script_args
from common.run import cli
from benchmarks.run_suite import Args

RESULTS = run_suite.ROOT / Args().results_root  # where the suite writes, so the test reads what it wrote


def test_named_suite_plans_every_task_and_algorithm_with_its_budget():
    jobs = run_suite.plan(Args(suite="cpu"))
    suite = run_suite.SUITES["cpu"]
    assert [(job.task, job.algo) for job in jobs] == [(task, algo) for task in suite.tasks for algo in suite.algos]
    assert all(job.num_seeds == suite.num_seeds and job.total_steps == suite.tasks[job.task] for job in jobs)
    flowrl_flags = next(job.flags for job in jobs if job.algo == "flowrl")
    assert "--hidden-dim" in flowrl_flags
    assert flowrl_flags[-2:] == ("--eval-interval", str(jobs[0].total_steps // suite.evaluations))
    cmd = run_suite.command(Args(suite="cpu", runs_root="runs/suites-test-none"), jobs[0])
    # inside the repository, the recorded command names the run root relative to it (where the scripts run)
    assert cmd[cmd.index("--run-root") + 1] == f"runs/suites-test-none/cpu/{jobs[0].task}/flowrl"


def test_restrictions_and_custom_suites():
    jobs = run_suite.plan(Args(suite="paper", tasks=("hopper-hop",), algos=("sac",), num_seeds=2))
    assert [(job.task, job.algo, job.num_seeds, job.total_steps) for job in jobs] == [("hopper-hop", "sac", 2, 1_000_000)]
    jobs = run_suite.plan(Args(suite="mine", tasks=("cartpole-swingup",), total_steps=5000))
    assert [(job.task, job.total_steps) for job in jobs] == [("cartpole-swingup", 5000)] * 2


@pytest.mark.parametrize("suite, backend, tasks", [
    ("dmc-paper", "dm_control", {"dog-run", "dog-trot", "dog-stand", "dog-walk", "humanoid-walk", "humanoid-run",
                                 "humanoid-stand", "walker-run", "walker-stand", "quadruped-walk"}),
    ("gym", "gymnasium", {"Ant-v4", "HalfCheetah-v4", "Walker2d-v4", "Swimmer-v4", "Hopper-v4", "Humanoid-v4"}),
])
def test_published_benchmark_suites_run_their_backend_in_paper_mode(suite, backend, tasks, tmp_path):
    jobs = run_suite.plan(Args(suite=suite))
    assert {job.task for job in jobs} == tasks and {job.algo for job in jobs} == {"flowrl", "sac"}
    for job in jobs:
        flags = dict(zip(job.flags[::2], job.flags[1::2]))
        # The reference implementation's protocol is the `paper` preset (ρ 0.95 for FlowRL included).
        assert flags == {"--preset": "paper", "--backend": backend, "--eval-interval": "10000"}
        parsed = cli.parse_args(script_args(job.algo), ALGORITHMS[job.algo][1],
                                ["--env", job.task, *job.flags, "--run-root", str(tmp_path)])
        assert (parsed.args.num_envs, parsed.args.updates_per_iteration, parsed.args.batch_size) == (1, 1, 256)
        if job.algo == "flowrl":
            assert parsed.config.target_rate == 0.95
        assert (job.num_seeds, job.total_steps) == (5, 1_000_000)
    with pytest.raises(ValueError, match="close matches: dog-run"):
        run_suite.plan(Args(suite="dmc-paper", tasks=("dog-rn",)))


@pytest.mark.parametrize("task", ["cheetah-run", "walker-walk"])
def test_dmc_200k_suite_reruns_the_committed_runs_exactly(task):
    """Every flag of the suite's commands, and every hyperparameter that it leaves at its default, equals the saved
    config of the run whose curve is committed (so a changed default cannot silently change what the suite reruns)."""
    for job in run_suite.plan(Args(suite="dmc-200k", tasks=(task,))):
        saved = json.loads((RESULTS / "dmc-200k" / task / "raw" / f"{job.algo}_config.json").read_text())
        flags = dict(zip(job.flags[::2], job.flags[1::2]))
        assert {flag: str(saved[flag[2:].replace("-", "_")]) for flag in flags} == flags
        config_class = {"flowrl": flowrl.FlowRLConfig, "sac": sac.SACConfig}[job.algo]
        for name, default in dataclasses.asdict(config_class()).items():
            flag = "--" + name.replace("_", "-")
            if default is None and flag not in flags:
                continue  # resolved when the run starts (target entropy −|A|, the critic's width), saved resolved
            # A hyperparameter added after the run started is absent from its config: it kept the default behaviour.
            assert str(saved.get(name, default)) == flags.get(flag, str(default)), (job.algo, name)
        assert (saved["seed"], saved["num_seeds"], saved["total_steps"]) == (1, job.num_seeds, job.total_steps)


@pytest.mark.parametrize("args, message", [
    (Args(suite="mine"), "not a named suite"),
    (Args(suite="cpu", tasks=("hopper-hop",)), "not in suite 'cpu'"),
    (Args(suite="cpu", tasks=("cheetah-rn",)), "close matches: cheetah-run"),
    (Args(suite="cpu", num_seeds=0), "--num-seeds must be a positive integer"),
])
def test_bad_input_is_refused_before_anything_runs(args, message):
    with pytest.raises(ValueError, match=message):
        run_suite.plan(args)


def write_eval_csv(run_dir, rows):
    run_dir.mkdir(parents=True)
    with (run_dir / "eval.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "seed", "mode", "return_mean", "return_std", "return_min", "return_max",
                         "num_episodes", "returns"])
        for step, seed, mode, value in rows:
            writer.writerow([step, seed, mode, value, 0, value, value, 1, value])


def test_results_keep_the_stochastic_evaluations_per_seed(tmp_path):
    write_eval_csv(tmp_path / "run", [(100, 1, "stochastic", 10.0), (100, 1, "deterministic", 99.0),
                                      (100, 2, "stochastic", 20.0), (200, 2, "stochastic", 40.0),
                                      (200, 1, "stochastic", 30.0)])
    final = run_suite.write_results(tmp_path / "run", tmp_path / "out" / "sac.csv")
    with (tmp_path / "out" / "sac.csv").open(newline="") as f:
        rows = list(csv.reader(f))
    assert rows == [["seed", "step", "eval_return"], ["1", "100", "10"], ["1", "200", "30"], ["2", "100", "20"],
                    ["2", "200", "40"]]
    assert final == ("eval_return", 35.0)
    assert not (tmp_path / "out" / "sac.tmp").exists()


def test_results_of_a_task_that_reports_success_are_its_success_rates(tmp_path):
    (tmp_path / "run").mkdir()
    with (tmp_path / "run" / "eval.csv").open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["step", "seed", "mode", "return_mean", "success_rate", "return_std", "returns", "successes"])
        writer.writerows([(100, 1, "stochastic", -40.0, 0.25, 0, "", ""),
                          (100, 1, "deterministic", 9.0, 1.0, 0, "", ""),
                          (100, 2, "stochastic", -30.0, 0.75, 0, "", "")])
    final = run_suite.write_results(tmp_path / "run", tmp_path / "out" / "flowrl.csv")
    with (tmp_path / "out" / "flowrl.csv").open(newline="") as f:
        assert list(csv.reader(f)) == [["seed", "step", "eval_success"], ["1", "100", "0.25"], ["2", "100", "0.75"]]
    assert final == ("eval_success", 0.5)


def test_the_myo_suite_is_myosuite_s_hard_tasks_in_paper_mode_at_1m_steps():
    jobs = run_suite.plan(Args(suite="myo"))
    assert {job.task for job in jobs} == {f"myoHand{t}Random-v0" for t in ("Reach", "Pose", "PenTwirl", "ObjHold",
                                                                           "KeyTurn")}
    assert {(job.algo, job.num_seeds, job.total_steps) for job in jobs} == {("flowrl", 5, 1_000_000),
                                                                           ("sac", 5, 1_000_000)}
    for job in jobs:
        assert " ".join(run_suite.PAPER) in " ".join(job.flags) and "--backend myosuite" in " ".join(job.flags)


def test_finished_pairs_are_skipped_and_interrupted_ones_resume(tmp_path, monkeypatch, capsys):
    args = Args(suite="mine", tasks=("cartpole-swingup",), total_steps=5000, results_root=str(tmp_path / "results"),
                runs_root=str(tmp_path / "runs"), dry_run=True)
    flowrl_job, sac_job = run_suite.plan(args)
    # flowrl finished: its results CSV exists. sac was interrupted after a checkpoint.
    run_suite.results_path(args, flowrl_job).parent.mkdir(parents=True)
    run_suite.results_path(args, flowrl_job).write_text("seed,step,eval_return\n")
    interrupted = run_suite.run_root(args, sac_job) / "cartpole-swingup__playground__sac__1-5__20260101-000000"
    (interrupted / "checkpoints").mkdir(parents=True)
    assert run_suite.command(args, sac_job)[2:4] == ["--env", "cartpole-swingup"]  # no checkpoint yet: fresh start
    (interrupted / "checkpoints" / "checkpoint_000000002048.msgpack").write_bytes(b"x")
    assert run_suite.command(args, sac_job)[1:] == ["sac_jax.py", "--resume", str(interrupted.resolve())]  # outside the repo: absolute

    monkeypatch.setattr(sys, "argv", ["run_suite.py", *[f"--{k.replace('_', '-')}={v}" for k, v in (
        ("suite", "mine"), ("tasks", "cartpole-swingup"), ("total_steps", 5000),
        ("results_root", args.results_root), ("runs_root", args.runs_root))], "--dry-run"])
    run_suite.main()
    printed = capsys.readouterr().out
    assert "suite mine: 2 runs, 1 already done" in printed
    assert "[1/1] cartpole-swingup sac" in printed and f"--resume {interrupted.resolve()}" in printed


def test_suite_definitions_are_valid_training_flags():
    """Every suite's flags parse and pass the training scripts' checks (a typo would only show mid-suite)."""
    import flowrl_jax
    import sac_jax
    from common.run.args import resolve
    from common.run.cli import script_args, validate_run_args
    from tyro import cli

    configs = {"flowrl": flowrl_jax.FlowRLConfig, "sac": sac_jax.SACConfig}
    for name in run_suite.SUITES:
        for job in run_suite.plan(Args(suite=name)):
            flags = ["--env", job.task, "--num-seeds", str(job.num_seeds), "--total-steps", str(job.total_steps),
                     *job.flags]
            parsed = cli(script_args(configs[job.algo]), args=flags)
            validate_run_args(resolve(parsed))
            parsed.validate()
            assert dataclasses.asdict(parsed)["num_seeds"] == job.num_seeds
