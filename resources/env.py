"""Settings read from the environment: the one place a QC_* variable is read and cast.

`env` is `os.getenv` with a required default (what `dg.EnvVar(name).get_value` did, without importing
Dagster, so plain modules use it too); `env_number` casts and names the variable when the value is
malformed. Secrets are not read here: they go to resources as `dg.EnvVar` (definitions.py).

pydantic-settings was tried and not adopted: its errors name the field (`timeout_s`), not the
variable (`QC_LLM_TIMEOUT_S`), so every malformed value would need its error rewritten; the LLM
variables share one set of fields under two prefixes chosen at call time (QC_LLM_, QC_TEACHER_), and
the resources they feed are already pydantic models that validate the values again.
"""

from __future__ import annotations

import os


def env(name: str, default: str) -> str:
    return os.getenv(name, default)


def env_number(name: str, default: str | int | float, kind: type[int] | type[float]):
    """The variable as an int or float; a malformed value is an error naming the variable."""
    value = env(name, str(default))
    try:
        return kind(value)
    except ValueError as e:
        raise ValueError(f"{name} must be a{'n integer' if kind is int else ' number'}, got {value!r}") from e
