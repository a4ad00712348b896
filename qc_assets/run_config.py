"""One config class per stage: the Dagster run config is derived from the stage's domain dataclass.

The domain dataclass (plain Python, no Dagster) holds each field once, with its default, its help
text (`field(metadata={"help": ...})`) and its validation (`__post_init__`). `dagster_config` builds
the `dg.Config` that the launchpad shows from it, so the two cannot drift; `to_domain` turns a run
config back into the dataclass, which validates it. Tuples become lists in run config (Dagster's
config types have no tuple) and tuples again in the dataclass.
"""

from __future__ import annotations

import dataclasses
import types
import typing

import dagster as dg
from pydantic import Field, create_model


def _config_type(tp):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        return typing.Optional[_config_type(next(a for a in args if a is not type(None)))]
    if origin in (tuple, list):
        if not args:
            raise TypeError(f"{tp} needs an element type to be run config")
        return list[_config_type(args[0])]
    if dataclasses.is_dataclass(tp):
        raise TypeError(f"nested dataclass {tp.__name__} cannot be run config: flatten its fields into the stage config")
    return tp


def _to_plain(value):
    return [_to_plain(v) for v in value] if isinstance(value, (tuple, list)) else value


def _from_plain(value, tp):
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if value is None:
        return None
    if origin in (typing.Union, types.UnionType):
        return _from_plain(value, next(a for a in args if a is not type(None)))
    if origin is tuple:
        return tuple(_from_plain(v, args[0]) for v in value)
    if origin is list:
        return [_from_plain(v, args[0]) for v in value]
    return value


def dagster_config(cls: type, name: str | None = None) -> type[dg.Config]:
    """A `dg.Config` subclass with the dataclass's fields, defaults and help texts."""
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        if f.default is not dataclasses.MISSING:
            default = f.default
        elif f.default_factory is not dataclasses.MISSING:
            default = f.default_factory()
        else:
            raise TypeError(f"{cls.__name__}.{f.name} needs a default to be run config")
        fields[f.name] = (_config_type(hints[f.name]),
                          Field(default=_to_plain(default), description=f.metadata.get("help")))
    return create_model(name or f"{cls.__name__}RunConfig", __base__=dg.Config, __doc__=cls.__doc__, **fields)


def to_domain(config: dg.Config, cls: type):
    """The dataclass for a run config (its `__post_init__` validates the values)."""
    hints = typing.get_type_hints(cls)
    values = config.model_dump()
    return cls(**{f.name: _from_plain(values[f.name], hints[f.name]) for f in dataclasses.fields(cls)})
