"""Flag names and the positive-integer check, worded once for every place that checks a flag's value."""


def flag(name: str) -> str:
    """The command-line spelling of a field: `num_envs` -> `--num-envs`."""
    return "--" + name.replace("_", "-")


def require_positive(name: str, value: int) -> None:
    """Raise ValueError, naming the flag, unless `value` is an integer ≥ 1."""
    if value < 1:
        raise ValueError(f"{flag(name)} must be a positive integer (≥ 1), got {value}")
