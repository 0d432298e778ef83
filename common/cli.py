"""Command line shared by every algorithm: the run flags, how they join an algorithm's config, their checks, and
`--env list`.

A script's command line is its algorithm's config fields (hyperparameters, defined in the algorithm file) plus the
run flags below (`script_args`). Parsing gives one flat object, as the command line is flat; `split()` turns it into
the two objects the harness works with, the run's `RunArgs` and the algorithm's own config, and nothing past the
parser sees the flat one. Every check runs before any env is built or anything compiles; a bad value exits with code
2 and one line naming the flag.
"""

import ast
import dataclasses
import difflib
import functools
import inspect
import sys
import textwrap
import typing
from pathlib import Path
from typing import Annotated, Literal

import jax
import tyro

from common import devices, processes, resume, stopping
from common.checks import flag, require_positive
from common.resources import check_run_root
from common.contract import MakeAlgorithm
from common.policy_export import PolicyFile
from common.tasks import format_task_list, require_installed, resolve_task


@dataclasses.dataclass
class RunArgs:
    env: str = "humanoid-walk"
    """Task: DM Control style (`humanoid-walk`, `dog-run`, ...), Gymnasium (`Ant-v4`) or MyoSuite
    (`myoHandReachRandom-v0`); `list` prints all of them with their backends."""
    backend: Literal["auto", "playground", "dm_control", "gymnasium", "myosuite"] = "auto"
    """Where the task comes from: `playground` (MJX ports of DM Control, on the accelerator), `dm_control` (the
    original suite, stepped on the host), `gymnasium` (MuJoCo tasks, on the host) or `myosuite` (musculoskeletal hand
    tasks, on the host). `auto`: the first of these that has the task, so Playground wherever it has a port. The
    chosen backend is saved in config.json."""
    seed: int = 1
    """Random seed: network init, noise, environment resets."""
    num_seeds: int = 1
    """S: independent seeds `seed … seed+S-1` trained together in one program (jax.vmap over the train state); each
    equals a single run with that seed. Metrics rows carry a seed column."""
    num_envs: int = 128
    """E: environments stepped together on the device."""
    devices: int = 1
    """D: devices the run spreads over (0: all of them, every process's). Several seeds are split across them (S a
    multiple of D), or with `--data-parallel` one seed's envs and replay are; docs/devices.md."""
    data_parallel: bool = False
    """With `--devices D`: split one seed's envs, replay and batch over the D devices, with parameters replicated
    and gradients averaged (num-envs, batch-size and buffer-size multiples of D)."""
    total_steps: int = 1_000_000
    """Environment steps to train for, all envs together (rounded up to whole chunks)."""
    updates_per_iteration: int = 8
    """U: gradient updates after each step of all E envs (update-to-data ratio U/E)."""
    batch_size: int = 512
    """Transitions per gradient update."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    start_steps: int = 5_000
    """Env steps of uniform random actions before learning starts."""
    physics: Literal["jax", "warp"] = "jax"
    """MJX physics implementation for the playground backend (`jax` is ~5x faster than warp on CPU)."""
    host_threads: int = 0
    """Threads that step a host backend's envs (0: one per CPU core); results do not depend on it."""
    episode_length: int | None = None
    """Time limit in env steps (default: the task's own, 1000 for DMC)."""
    eval_interval: int = 10_000
    """Env steps between evaluations."""
    eval_episodes: int = 5
    """Evaluation episodes, run in parallel on separate envs."""
    eval_mode: Literal["stochastic", "deterministic", "both"] = "stochastic"
    """Policy noise at evaluation: `stochastic` samples as in training, `deterministic` uses the noise mean."""
    log_interval: int = 5_000
    """Env steps per compiled chunk: metrics, progress bar and checks happen between chunks."""
    run_root: str = "runs"
    """Directory that run directories are created in."""
    checkpoint_interval: int = 100_000
    """Env steps between checkpoints of the whole train state (one is also written at the end and on SIGINT/SIGTERM)."""
    keep_checkpoints: int = 2
    """Newest checkpoints kept in the run directory."""
    resume: str | None = None
    """Continue a run: its run directory (newest checkpoint) or one checkpoint file. Its saved flags are the defaults;
    only safe ones (total steps, evaluation, checkpointing, logging) may change."""
    wandb: bool = False
    """Also log to Weights & Biases (needs `pip install wandb`)."""
    wandb_project: str = "flowrl-jax"
    """W&B project name."""
    video_interval: int = 0
    """K: film one evaluation episode every K-th evaluation and at the end, into <run>/videos/<step>.mp4 and the
    logs (0: no videos)."""
    video_size: str = "320x240"
    """Video frame size: WIDTHxHEIGHT, or a height alone (the width is 4/3 of it); both even."""
    play: str | None = None
    """Instead of training, replay an exported policy: a run directory (its newest), a checkpoint (the policy file
    beside it) or a policy file; prints each episode's return and writes an mp4. `--eval-mode` picks the mode."""
    play_episodes: int | None = None
    """Episodes that `--play` runs (default: the run's `--eval-episodes`, so that deterministic returns equal the
    run's own evaluation at that step)."""


DEFAULT_ASPECT = 4 / 3  # width / height when --video-size gives the height alone (dm_control's 320×240)


def parse_video_size(text: str) -> tuple[int, int]:
    """(width, height) from `WIDTHxHEIGHT` or a height alone (width = 4/3 of it, rounded to even); both even, as
    H.264's 4:2:0 colour needs, and within 16–4096. Raises ValueError naming the flag."""
    try:
        width, height = (int(part) for part in text.lower().split("x")) if "x" in text.lower() else (
            2 * round(int(text) * DEFAULT_ASPECT / 2), int(text))
    except ValueError:
        raise ValueError(f"--video-size must be WIDTHxHEIGHT or a height, e.g. 320x240 or 240, got {text!r}") from None
    if not all(16 <= side <= 4096 and side % 2 == 0 for side in (width, height)):
        raise ValueError(f"--video-size: width and height must be even and within 16–4096, got {width}x{height}")
    return width, height


def require_wandb() -> None:
    """Fail before anything compiles rather than after minutes of JIT."""
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise ValueError("--wandb needs the wandb package, which is not installed: pip install wandb") from e


def validate_run_args(args: RunArgs) -> None:
    """The checks every algorithm shares (env name, counts, and the E / U / batch / buffer consistency)."""
    require_installed(resolve_task(args.env, args.backend))
    for name in ("num_seeds", "num_envs", "total_steps", "updates_per_iteration", "batch_size", "buffer_size",
                 "eval_interval", "eval_episodes", "log_interval", "checkpoint_interval", "keep_checkpoints"):
        require_positive(name, getattr(args, name))
    if args.episode_length is not None:
        require_positive("episode_length", args.episode_length)
    if args.host_threads < 0:
        raise ValueError(f"--host-threads must be ≥ 0 (0: one per CPU core), got {args.host_threads}")
    if not 0 <= args.start_steps < args.total_steps:
        raise ValueError(f"--start-steps must be in [0, --total-steps={args.total_steps}), got {args.start_steps}")
    if args.num_envs > args.buffer_size:
        raise ValueError(f"--num-envs must be ≤ --buffer-size={args.buffer_size} (one step of all envs must fit in "
                         f"the buffer), got {args.num_envs}")
    stored = first_update_rows(args)
    if args.batch_size > stored:
        raise ValueError(f"--batch-size must be ≤ {stored}, the transitions stored at the first update "
                         f"(--start-steps={args.start_steps}, --num-envs={args.num_envs}), got {args.batch_size}")
    if args.wandb:
        require_wandb()
    if args.video_interval < 0:
        raise ValueError(f"--video-interval must be ≥ 0 (0: no videos), got {args.video_interval}")
    parse_video_size(args.video_size)
    if args.play_episodes is not None:
        require_positive("play_episodes", args.play_episodes)


def validate_algorithm(args: RunArgs, config, make_agent: MakeAlgorithm) -> None:
    """The algorithm's checks of its config (its `make`, at sizes 1: nothing is built), and its batch recipe
    against the replay."""
    agent = make_agent(config, 1, 1)
    if agent.recent_share is not None and agent.recent_share[1] > args.buffer_size:
        raise ValueError(f"--recent-window must be ≤ --buffer-size={args.buffer_size}, got {agent.recent_share[1]}")


@functools.cache
def script_args(config_class: type) -> type:
    """The command line of an algorithm's script: the run flags, then its config's fields (hyperparameters), in
    that order in `--help`, as one flat dataclass. Its `split()` gives (RunArgs, config_class instance)."""

    def split(flags) -> tuple[RunArgs, object]:
        values = dataclasses.asdict(flags)
        return (RunArgs(**{f.name: values[f.name] for f in dataclasses.fields(RunArgs)}),
                config_class(**{f.name: values[f.name] for f in dataclasses.fields(config_class)}))

    # Inheriting both lets tyro read each field's docstring where it is defined.
    return dataclasses.dataclass(type(f"{config_class.__name__}Flags", (config_class, RunArgs),
                                      {"__doc__": config_class.__doc__, "split": split}))


# The project's algorithm scripts, so that a flag of one given to another is named as the other's.
SCRIPTS = {"flowrl_jax.py": ("flowrl_jax", "FlowRLConfig"), "sac_jax.py": ("sac_jax", "SACConfig")}


def _script_flags(args_class: type) -> dict[str, dataclasses.Field]:
    """Every spelling of each flag (`--no-x` too for booleans) -> its field."""
    spellings = {}
    for field in dataclasses.fields(args_class):
        spellings[flag(field.name)] = field
        if field.type in (bool, "bool"):
            spellings["--no-" + flag(field.name)[2:]] = field
    return spellings


def _scripts_with_flag(name: str) -> list[str]:
    import importlib

    return [script for script, (module, config) in SCRIPTS.items()
            if name in _script_flags(script_args(getattr(importlib.import_module(module), config)))]


def _value_error(name: str, annotation, value: str) -> str | None:
    """Why `value` is no value of a flag typed `annotation` (None where it is one, or where tyro is left to say)."""
    kinds = set(typing.get_args(annotation)) or {annotation}
    if type(None) in kinds and value == "None":
        return None
    kinds.discard(type(None))
    for kind, convert, noun in ((int, int, "an integer"), (float, float, "a number")):
        if kinds == {kind}:
            try:
                convert(value)
            except ValueError:
                return f"{name} must be {noun}, got {value!r}"
    if typing.get_origin(annotation) is Literal and value not in typing.get_args(annotation):
        return f"{name} must be one of {', '.join(map(str, typing.get_args(annotation)))}, got {value!r}"
    return None


def check_command_line(args_class: type, argv: list[str]) -> None:
    """Each flag exists in this script (one of the other script's is named as such) and each number or choice is
    one: the same one-line errors as every other check, before tyro parses."""
    spellings, hints = _script_flags(args_class), typing.get_type_hints(args_class)
    for index, token in enumerate(argv):
        if not token.startswith("--") or token in ("--help",):
            continue
        name, _, inline = token.partition("=")
        if name not in spellings:
            others = _scripts_with_flag(name)
            if others:
                raise ValueError(f"{name} is a flag of {' and '.join(others)}, not of {Path(sys.argv[0]).name}")
            close = difflib.get_close_matches(name, spellings, n=3)
            raise ValueError(f"unknown flag {name}" + (f"; close matches: {', '.join(close)}" if close else ""))
        value = inline if inline else (argv[index + 1] if index + 1 < len(argv) else None)
        annotation = hints[spellings[name].name]
        if value is not None and annotation not in (bool,):
            problem = _value_error(name, annotation, value)
            if problem:
                raise ValueError(problem)


# How `--help` groups the run flags; the algorithm's config is one more group, "algorithm hyperparameters".
HELP_GROUPS = {
    "task and envs": ("env", "backend", "num_envs", "physics", "host_threads", "episode_length", "seed", "num_seeds"),
    "devices": ("devices", "data_parallel"),
    "replay and updates": ("updates_per_iteration", "batch_size", "buffer_size", "start_steps"),
    "run length and evaluation": ("total_steps", "eval_interval", "eval_episodes", "eval_mode", "log_interval"),
    "checkpoints": ("run_root", "checkpoint_interval", "keep_checkpoints", "resume"),
    "logging": ("wandb", "wandb_project"),
    "videos and replay": ("video_interval", "video_size", "play", "play_episodes"),
}
EXAMPLES = """examples:
  python {script} --env humanoid-walk                          128 MJX envs on the accelerator, 1 M env steps
  python {script} --env dog-run --num-seeds 5                  the original DM Control dog, 5 seeds at once
  python {script} --resume runs/<run> --total-steps 2000000    continue a run from its last checkpoint"""


def field_docs(cls: type) -> dict[str, str]:
    """Each dataclass field's docstring (the string right below it), on one line, through the class's bases."""
    docs = {}
    for klass in reversed(cls.__mro__):
        try:
            tree = ast.parse(textwrap.dedent(inspect.getsource(klass)))
        except (OSError, TypeError):  # builtins, and classes made at run time
            continue
        body = tree.body[0].body
        for node, after in zip(body, body[1:]):
            if (isinstance(node, ast.AnnAssign) and isinstance(after, ast.Expr)
                    and isinstance(after.value, ast.Constant) and isinstance(after.value.value, str)):
                docs[node.target.id] = " ".join(after.value.value.split())
    return docs


@functools.cache
def help_view(args_class: type) -> type:
    """The flat flags as tyro parses them: one nested group per HELP_GROUPS entry and one for the algorithm's
    hyperparameters, with each docstring on one line (no ragged breaks) and no "(default: None)" beside a docstring
    that says what None means. Flag names stay flat (OmitArgPrefixes)."""
    docs, fields = field_docs(args_class), {f.name: f for f in dataclasses.fields(args_class)}
    run_names = {f.name for f in dataclasses.fields(RunArgs)}
    groups = {**HELP_GROUPS, "algorithm hyperparameters": tuple(n for n in fields if n not in run_names)}

    def group_class(title: str, names: tuple[str, ...]) -> type:
        members = [(name, Annotated[fields[name].type, tyro.conf.arg(
            help=docs.get(name), help_behavior_hint="" if fields[name].default is None else None)],
                    dataclasses.field(default=fields[name].default)) for name in names]
        return dataclasses.make_dataclass(title.title().replace(" ", ""), members)

    view = dataclasses.make_dataclass("Flags", [(title.replace(" ", "_"), group_class(title, names))
                                                for title, names in groups.items()])
    return tyro.conf.OmitArgPrefixes[view]


def parse_with_tyro(args_class: type, argv: list[str], defaults):
    """tyro over the grouped view, flattened back into `args_class`; `--help` ends with EXAMPLES."""
    view = typing.get_args(help_view(args_class))[0]
    groups = {f.name: f.type for f in dataclasses.fields(view)}
    default = view(**{name: group(**{f.name: getattr(defaults, f.name) for f in dataclasses.fields(group)})
                      for name, group in groups.items()})
    try:
        parsed = tyro.cli(help_view(args_class), args=argv, default=default, prog=Path(sys.argv[0]).name)
    except SystemExit as exit_:
        if exit_.code == 0 and {"-h", "--help"} & set(argv):
            print(EXAMPLES.format(script=Path(sys.argv[0]).name))
        raise
    return args_class(**{name: value for group in groups for name, value in
                         dataclasses.asdict(getattr(parsed, group)).items()})


def check_placement(args: RunArgs) -> None:
    """The device flags against this machine (common.devices), then `--devices 0` resolved to the count, as
    config.json records it and a resume compares it."""
    devices.check_args(args, args.backend)
    if jax.process_count() > 1 and (args.video_interval or args.play):
        raise ValueError("--video-interval and --play run in one process; film the run's exported policy "
                         "afterwards with --play")
    args.devices = devices.device_count(args)


def first_update_rows(args: RunArgs) -> int:
    """Transitions stored when the first update draws its batch."""
    # Updates start at the first iteration whose env-step count reaches start_steps (at least one iteration).
    return min(max(-(-args.start_steps // args.num_envs), 1) * args.num_envs, args.buffer_size)


def parse_args(args_class: type, make_agent: MakeAlgorithm, argv: list[str] | None = None):
    """Parse flags; print the env list and exit for `--env list`; exit 2 with one line on any bad value.

    With `--resume RUN`, the run's saved flags are the defaults, and a flag given now that would change the meaning
    of the saved train state is refused with the list of differences. A default `--batch-size` larger than what the
    first update has stored is lowered to it, with a note; a value given is never changed."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        check_command_line(args_class, argv)
        resume_at = next((i for i, arg in enumerate(argv) if arg.split("=")[0] == "--resume"), None)
        if resume_at is not None and ("=" in argv[resume_at] or resume_at + 1 < len(argv)):
            value = argv[resume_at].partition("=")[2] or argv[resume_at + 1]
            saved = resume.saved_config(value)
            fields = {field.name for field in dataclasses.fields(args_class)}
            args = parse_with_tyro(args_class, argv, args_class(**{k: v for k, v in saved.items() if k in fields}))
            differences = resume.config_differences(saved, dataclasses.asdict(args))
            if differences:
                raise ValueError("--resume: these flags differ from the run and cannot change: "
                                 + "; ".join(differences))
        else:
            args = parse_with_tyro(args_class, argv, args_class())
            given = {token.partition("=")[0] for token in argv}
            if "--batch-size" not in given and args.num_envs >= 1 and args.batch_size > first_update_rows(args) >= 1:
                print(f"note: --batch-size {args.batch_size} (the default) is more than the {first_update_rows(args)} "
                      f"transitions stored at the first update; using {first_update_rows(args)}", file=sys.stderr)
                args.batch_size = first_update_rows(args)
        if args.env == "list":
            print(format_task_list())
            sys.exit(0)
        validate_run_args(args)
        validate_algorithm(*args.split(), make_agent)
        if not (args.resume or args.play):  # both write into an existing run, or beside a policy file
            check_run_root(args.run_root)
        args.backend = resolve_task(args.env, args.backend).backend
        if args.devices != 1 or args.data_parallel or jax.distributed.is_initialized():
            check_placement(args)  # asks JAX for its devices: only where the run uses more than one
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return args


def main(algo: str, config_class: type, make_agent: MakeAlgorithm, policy_file: PolicyFile | None = None) -> None:
    """An algorithm script's command line: answer signals from the first moment, parse and check the flags (exit 2
    before any env is built or anything compiles), then train, or with `--play` replay an exported policy
    (`policy_file` says how the algorithm exports and reads its policy)."""
    # Joining the other processes first: jax.distributed installs a SIGTERM handler of its own (its preemption
    # notifier), which the watcher then replaces, so that a signal to any process stops all of them at one chunk.
    stopping.install(peers=processes.initialize())  # joining them before anything asks JAX for its devices
    flags = parse_args(script_args(config_class), make_agent)
    if flags.play:
        if policy_file is None:
            print(f"error: --play: {Path(sys.argv[0]).name} exports no policy to replay", file=sys.stderr)
            sys.exit(2)
        from common import play  # as training below

        play.main(flags.split()[0], policy_file.load)
        return
    from common import training  # the envs, MuJoCo and the logging stack: only once the flags are known good

    training.run(flags, make_agent, algo, policy_file.fields if policy_file else ())
