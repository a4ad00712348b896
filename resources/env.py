"""Settings read from the environment, through `dg.EnvVar` (so secrets never pass through here as text)."""

import dagster as dg


def env(name: str, default: str) -> str:
    return dg.EnvVar(name).get_value(default)


def env_number(name: str, default: str, kind: type[int] | type[float]):
    """The variable as an int or float; a malformed value is an error naming the variable."""
    value = env(name, default)
    try:
        return kind(value)
    except ValueError as e:
        raise ValueError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}") from e
