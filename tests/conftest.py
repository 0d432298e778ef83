"""Test-session setup: one persistent XLA compilation cache for the whole suite run, shared by the pytest workers,
the in-process tests and every subprocess they start; and the slowest test files first.

Most of the suite's time is XLA compilation. With the cache, a program that one test compiled (an MJX env step, a
chunk, an evaluator) is loaded by every later test and subprocess that builds the same program, instead of being
compiled again. The directory is made for this run and removed at its end (a cache of another checkout's programs
would only grow), unless JAX_COMPILATION_CACHE_DIR names one already. A test that needs a cold compile makes its own
(tests/test_interrupt.py).
"""

import os
import shutil
import tempfile

import jax
import pytest

# As common/__init__.py does, before any test module imports MuJoCo (which fixes its GL backend on import).
os.environ.setdefault("MUJOCO_GL", "egl")
# Imported by the xdist controller before it starts the workers, which inherit the variables, as subprocesses do.
OWN_CACHE = "JAX_COMPILATION_CACHE_DIR" not in os.environ
if OWN_CACHE:
    os.environ["JAX_COMPILATION_CACHE_DIR"] = tempfile.mkdtemp(prefix="flowrl-jax-xla-cache-")
CACHE_DIR = os.environ["JAX_COMPILATION_CACHE_DIR"]
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS", "0")
os.environ.setdefault("JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES", "0")
jax.config.update("jax_compilation_cache_dir", CACHE_DIR)
jax.config.update("jax_persistent_cache_min_compile_time_secs", 0.0)
jax.config.update("jax_persistent_cache_min_entry_size_bytes", 0)


def pytest_unconfigure(config):
    if OWN_CACHE and not hasattr(config, "workerinput"):  # the controller (or a run without workers) made it
        shutil.rmtree(CACHE_DIR, ignore_errors=True)


# The slowest files, slowest first (benchmarks/results/test_suite/). With `--dist loadfile` each file runs whole on one
# worker, and xdist would start the files with the most tests first, leaving a slow file with few tests to run alone
# at the end. Files not named keep their order after these.
SLOWEST_FIRST = ("test_devices.py", "test_flowrl_train.py", "test_sac.py", "test_host_envs.py", "test_seeds.py",
                 "test_gpu_check.py", "test_video.py", "test_soak.py", "test_resume.py", "test_contract.py",
                 "test_standalone.py", "test_interrupt.py", "test_envs.py", "test_myosuite.py", "test_precision.py",
                 "test_host_learning.py", "test_robust_runs.py", "test_numerics.py")


def pytest_configure(config):
    if hasattr(config.option, "loadscopereorder"):  # pytest-xdist's reordering by number of tests
        config.option.loadscopereorder = False


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items):
    rank = {name: index for index, name in enumerate(SLOWEST_FIRST)}
    items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort: tests keep their order in a file


# Playground envs and trainers that training.run built in this worker, by what they were built from (see below).
_BUILT: dict = {}


@pytest.fixture(scope="module")
def reused_trainers():
    """While a module that asks for it runs, training.run reuses the Playground envs and the trainer that an earlier
    run in this worker built from the same task, sizes, config and chunk spec (another seed, another total, a
    resume): its jitted functions are traced once, instead of once per run (seconds a run on MJX, even when the
    persistent cache holds every program). A Playground env holds no state between calls, nor does a trainer. Host envs (their own threads and
    simulators) are built fresh, as is every run in a module that does not ask; separate processes, as in the soak
    and the kill and resume tests, build their own."""
    from common.run import training

    make_env, build_trainer = training.make_env, training.build_trainer

    def reused_env(task, num_envs, **options):
        if task.backend != "playground":
            return make_env(task, num_envs, **options)
        key = ("env", task, num_envs, tuple(sorted(options.items())))
        if key not in _BUILT:
            _BUILT[key] = make_env(task, num_envs, **options)
        return _BUILT[key]

    def reused_trainer(run, make_agent, env, eval_env):
        if any(built is env for built in _BUILT.values()) and any(built is eval_env for built in _BUILT.values()):
            key = ("trainer", make_agent, repr(run.config), run.spec, id(env), id(eval_env),
                   bool(run.args.video_interval))
            if key not in _BUILT:
                _BUILT[key] = build_trainer(run, make_agent, env, eval_env)
            return _BUILT[key]
        return build_trainer(run, make_agent, env, eval_env)

    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(training, "make_env", reused_env)
        patch.setattr(training, "build_trainer", reused_trainer)
        yield


@pytest.fixture
def refused(capsys):
    """refused(args_class, make_agent, argv): the script's parse and checks (common.run.cli.parse_args, what its
    `main` runs first) on argv, in this process, which must exit 2; what they wrote to stderr."""
    from common.run import cli

    def parse(args_class, make_agent, argv):
        with pytest.raises(SystemExit) as exit_info:
            cli.parse_args(args_class, make_agent, argv)
        assert exit_info.value.code == 2
        return capsys.readouterr().err

    return parse
