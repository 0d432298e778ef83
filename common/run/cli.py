"""Command line shared by every algorithm: how the run flags (common.run.args) join an algorithm's config, presets,
`--help`, the checks, and `--env list`.

A script's command line is its algorithm's config fields (hyperparameters, defined in the algorithm file) plus the
run flags (`script_args`). Parsing gives one flat object, as the command line is flat; `resolve` turns it into the
run's `ResolvedRun` (the flags, the algorithm's own config, the task and the layout), and nothing past the parser sees
the flat one. Every check runs before any env is built or anything compiles; a bad value exits with code 2 and one
line naming the flag.
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

from common.checks import flag, require_positive
from common.core.contract import MakeAlgorithm
from common.envs.tasks import format_task_list, require_installed, resolve_task
from common.run import processes, resume, stopping
from common.run.args import ResolvedRun, RunArgs, first_update_rows, parse_video_size, resolve
from common.run.policy_export import PolicyFile
from common.run.presets import PRESETS
from common.run.resources import check_run_root


def require_wandb() -> None:
    """Fail before anything compiles rather than after minutes of JIT."""
    try:
        import wandb  # noqa: F401
    except ImportError as e:
        raise ValueError("--wandb needs the wandb package, which is not installed: pip install wandb") from e


def validate_run_args(run: ResolvedRun) -> None:
    """The checks every algorithm shares (env name, counts, devices, and the E / U / batch / buffer consistency)."""
    args = run.args
    require_installed(run.task)
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


def validate_algorithm(run: ResolvedRun, make_agent: MakeAlgorithm) -> None:
    """The algorithm's checks of its config (its `make`, at sizes 1: nothing is built), and its batch recipe
    against the replay."""
    agent = make_agent(run.config, 1, 1)
    if agent.recent_share is not None and agent.recent_share[1] > run.args.buffer_size:
        raise ValueError(f"--recent-window must be ≤ --buffer-size={run.args.buffer_size}, got "
                         f"{agent.recent_share[1]}")


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


def _script_flags(args_class: type) -> dict[str, dataclasses.Field]:
    """Every spelling of each flag (`--no-x` too for booleans) -> its field."""
    spellings = {}
    for field in dataclasses.fields(args_class):
        spellings[flag(field.name)] = field
        if field.type in (bool, "bool"):
            spellings["--no-" + flag(field.name)[2:]] = field
    return spellings


def declared_config_flags(script: Path) -> set[str] | None:
    """The hyperparameter flags of another algorithm script, read from its source without running it: the fields
    of the config class its `HARNESS_CONFIG = <class>` line declares (None where it declares none)."""
    try:
        tree = ast.parse(script.read_text())
    except (OSError, SyntaxError, UnicodeDecodeError):
        return None
    classes = {node.name: node for node in tree.body if isinstance(node, ast.ClassDef)}
    declared = next((node.value.id for node in tree.body if isinstance(node, ast.Assign)
                     and any(isinstance(t, ast.Name) and t.id == "HARNESS_CONFIG" for t in node.targets)
                     and isinstance(node.value, ast.Name)), None)
    if declared not in classes:
        return None
    spellings = set()
    for node in classes[declared].body:
        if isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            spellings.add(flag(node.target.id))
            if isinstance(node.annotation, ast.Name) and node.annotation.id == "bool":
                spellings.add("--no-" + flag(node.target.id)[2:])
    return spellings


def _scripts_with_flag(name: str, args_class: type) -> list[str]:
    """The other algorithm scripts beside this one's (those that declare HARNESS_CONFIG) that have flag `name`."""
    own = Path(inspect.getfile(args_class.__bases__[0])).resolve()  # the file of the algorithm's config class
    return [script.name for script in sorted(own.parent.glob("*.py"))
            if script != own and name in (declared_config_flags(script) or ())]


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
            others = _scripts_with_flag(name, args_class)
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
    "preset": ("preset",),
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
  python {script} --env dog-run --preset paper                 the FlowRL reference code's protocol
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


def nearest_multiples(value: int, of: int) -> str:
    lower = value // of * of
    return " or ".join(str(n) for n in (lower, lower + of) if n > 0)


def check_devices(args: RunArgs, backend: str) -> None:
    """The placement flags against this machine and the other flags (docs/devices.md); raises ValueError with one
    line. Runs after jax.distributed is initialised, before anything compiles."""
    if args.devices < 0:
        raise ValueError(f"--devices must be ≥ 0 (0: every device), got {args.devices}")
    visible, processes = jax.device_count(), jax.process_count()
    count = args.devices or visible
    if count > visible:
        hint = (f"; on a CPU, XLA_FLAGS=--xla_force_host_platform_device_count={count} makes {count} (they share "
                f"its cores)" if jax.default_backend() == "cpu" else "")
        raise ValueError(f"--devices {count}: only {visible} device{'s' * (visible > 1)} "
                         f"({jax.devices()[0].device_kind}) {'are' if visible > 1 else 'is'} visible{hint}")
    if processes > 1 and count != visible:
        raise ValueError(f"--devices {args.devices}: with {processes} processes every device takes part; pass 0 or "
                         f"{visible}")
    if count > 1 and backend != "playground":
        raise ValueError(f"--devices {count}: {backend} envs step on the host, which one device feeds (the host, not "
                         f"the device, bounds their speed: docs/devices.md); use --num-seeds on one device, or a "
                         f"playground task")
    if args.data_parallel:
        if args.num_seeds > 1:
            raise ValueError(f"--data-parallel splits one seed over the devices; with --num-seeds {args.num_seeds} "
                             f"drop it, and the seeds are split instead")
        for name in ("num_envs", "batch_size", "buffer_size"):
            value = getattr(args, name)
            if value % count:
                raise ValueError(f"--{name.replace('_', '-')} {value} does not split over {count} devices "
                                 f"(--data-parallel); use {nearest_multiples(value, count)}")
    elif count > 1:
        if args.num_seeds == 1:
            raise ValueError(f"--devices {count} with one seed: add --data-parallel to split its envs and replay, or "
                             f"--num-seeds {count} to train {count} seeds")
        if args.num_seeds % count:
            raise ValueError(f"--num-seeds {args.num_seeds} does not split over {count} devices; use "
                             f"{nearest_multiples(args.num_seeds, count)}")
    if processes > 1 and (args.video_interval or args.play):
        raise ValueError("--video-interval and --play run in one process; film the run's exported policy "
                         "afterwards with --play")


def given_value(argv: list[str], name: str) -> str | None:
    """The value given to flag `name` on the command line (`--name V` or `--name=V`), or None."""
    for index, token in enumerate(argv):
        if token == name and index + 1 < len(argv):
            return argv[index + 1]
        if token.startswith(name + "="):
            return token.partition("=")[2]
    return None


def preset_defaults(args_class: type, argv: list[str]):
    """The script's defaults, with the values of the `--preset` given (for the task given) in their place."""
    defaults = args_class()
    name = given_value(argv, "--preset")
    if name is None:
        return defaults
    if name not in PRESETS:
        raise ValueError(f"--preset must be one of {', '.join(PRESETS)}, got {name!r}")
    task = resolve_task(given_value(argv, "--env") or defaults.env, given_value(argv, "--backend") or defaults.backend)
    fields = {field.name for field in dataclasses.fields(args_class)}
    values = {flag_name: value for flag_name, value in PRESETS[name].values(task.name, task.backend).items()
              if flag_name in fields}
    return dataclasses.replace(defaults, preset=name, **values)


def parse_args(args_class: type, make_agent: MakeAlgorithm, argv: list[str] | None = None) -> ResolvedRun:
    """Parse flags, check them and resolve them (common.run.args.resolve); print the env list and exit for
    `--env list`; exit 2 with one line on any bad value.

    With `--resume RUN`, the run's saved flags are the defaults, and a flag given now that would change the meaning
    of the saved train state is refused with the list of differences. A default `--batch-size` larger than what the
    first update has stored is lowered to it, with a note; a value given is never changed."""
    argv = sys.argv[1:] if argv is None else argv
    try:
        check_command_line(args_class, argv)
        resume_at = next((i for i, arg in enumerate(argv) if arg.split("=")[0] == "--resume"), None)
        resuming = resume_at is not None and ("=" in argv[resume_at] or resume_at + 1 < len(argv))
        if resuming:
            value = argv[resume_at].partition("=")[2] or argv[resume_at + 1]
            saved = resume.values_it_ran_with(args_class, resume.saved_config(value))
            fields = {field.name for field in dataclasses.fields(args_class)}
            flags = parse_with_tyro(args_class, argv, args_class(**{k: v for k, v in saved.items() if k in fields}))
            differences = resume.config_differences(saved, dataclasses.asdict(flags))
            if differences:
                raise ValueError("--resume: these flags differ from the run and cannot change: "
                                 + "; ".join(differences))
        else:
            flags = parse_with_tyro(args_class, argv, preset_defaults(args_class, argv))
        if flags.env == "list":
            print(format_task_list())
            sys.exit(0)
        given = {token.partition("=")[0] for token in argv}
        run = resolve(flags, lower_default_batch=not resuming and "--batch-size" not in given)
        args = run.args
        if flags.devices != 1 or args.data_parallel or jax.distributed.is_initialized():
            check_devices(args, run.task.backend)  # asks JAX for its devices: only where the run uses more than one
        validate_run_args(run)
        validate_algorithm(run, make_agent)
        if not (args.resume or args.play):  # both write into an existing run, or beside a policy file
            check_run_root(args.run_root)
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    return run


def main(algo: str, config_class: type, make_agent: MakeAlgorithm, policy_file: PolicyFile | None = None) -> None:
    """An algorithm script's command line: answer signals from the first moment, parse and check the flags (exit 2
    before any env is built or anything compiles), then train, or with `--play` replay an exported policy
    (`policy_file` says how the algorithm exports and reads its policy)."""
    # Joining the other processes first: jax.distributed installs a SIGTERM handler of its own (its preemption
    # notifier), which the watcher then replaces, so that a signal to any process stops all of them at one chunk.
    stopping.install(peers=processes.initialize())  # joining them before anything asks JAX for its devices
    run = parse_args(script_args(config_class), make_agent)
    if run.args.play:
        if policy_file is None:
            print(f"error: --play: {Path(sys.argv[0]).name} exports no policy to replay", file=sys.stderr)
            sys.exit(2)
        from common.run import play  # as training below

        play.main(run.args, policy_file.load)
        return
    from common.run import training  # the envs, MuJoCo and the logging stack: only once the flags are known good

    training.run(run, make_agent, algo, policy_file.fields if policy_file else ())
