"""One config class per stage: the Dagster run config is derived from the stage's domain dataclass.

The domain dataclass (plain Python, no Dagster) holds each field once, with its default, its help
text (`field(metadata={"help": ...})`) and its validation (`__post_init__`). `dagster_config` builds
the `dg.Config` that the launchpad shows from it, so the two cannot drift; `to_domain` turns a run
config back into the dataclass, which validates it. Tuples become lists in run config (Dagster's
config types have no tuple) and tuples again in the dataclass.

One level of nesting: a field whose type is itself a dataclass (e.g. `lora: LoraTrainingSpec`) becomes
a nested `dg.Config` whose defaults are those of the outer field's default, and `to_domain` rebuilds
the nested dataclass first, so a bad nested value is refused naming `<field>.<name>`. A dataclass
inside a nested dataclass is refused: flatten it, or nest it beside the first.
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
        return _config_type(next(a for a in args if a is not type(None))) | None
    if origin in (tuple, list):
        if not args:
            raise TypeError(f"{tp} needs an element type to be run config")
        return list[_config_type(args[0])]
    if dataclasses.is_dataclass(tp):
        raise TypeError(
            f"dataclass {tp.__name__} nested two levels deep cannot be run config: run config nests one level only"
        )
    return tp


def _to_plain(value):
    if dataclasses.is_dataclass(value):
        return {f.name: _to_plain(getattr(value, f.name)) for f in dataclasses.fields(value)}
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


def _default(cls: type, f: dataclasses.Field):
    if f.default is not dataclasses.MISSING:
        return f.default
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    raise TypeError(f"{cls.__name__}.{f.name} needs a default to be run config")


def _fields(cls: type, defaults) -> dict:
    """pydantic field definitions for `cls`; `defaults` (an instance) overrides the class defaults."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        default = getattr(defaults, f.name) if defaults is not None else _default(cls, f)
        out[f.name] = (
            _config_type(hints[f.name]),
            Field(default=_to_plain(default), description=f.metadata.get("help")),
        )
    return out


def dagster_config(cls: type, name: str | None = None) -> type[dg.Config]:
    """A `dg.Config` subclass with the dataclass's fields, defaults and help texts; a dataclass-typed
    field becomes a nested `dg.Config` named `<name><Field>` with the outer default's values."""
    name = name or f"{cls.__name__}RunConfig"
    hints = typing.get_type_hints(cls)
    fields = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            default = _default(cls, f)
            nested = create_model(
                f"{name}{f.name.title().replace('_', '')}",
                __base__=dg.Config,
                __doc__=tp.__doc__,
                **_fields(tp, default),
            )
            fields[f.name] = (nested, Field(default_factory=nested, description=f.metadata.get("help", tp.__doc__)))
        else:
            fields[f.name] = (
                _config_type(tp),
                Field(default=_to_plain(_default(cls, f)), description=f.metadata.get("help")),
            )
    return create_model(name, __base__=dg.Config, __doc__=cls.__doc__, **fields)


def _build(cls: type, values: dict):
    hints = typing.get_type_hints(cls)
    kwargs = {}
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if dataclasses.is_dataclass(tp):
            try:
                kwargs[f.name] = _build(tp, values[f.name])
            except (TypeError, ValueError) as e:
                message = str(e)
                raise ValueError(message if message.startswith(f"{f.name}.") else f"{f.name}: {message}") from e
        else:
            kwargs[f.name] = _from_plain(values[f.name], tp)
    return cls(**kwargs)


def to_domain(config: dg.Config, cls: type):
    """The dataclass for a run config (its `__post_init__` validates the values, a nested dataclass's
    first: its errors are prefixed with the field's name)."""
    return _build(cls, config.model_dump())


def from_mapping(cls: type, data: dict, where: str = "config"):
    """The dataclass for a plain mapping in run-config shape (a YAML block): unknown keys, a wrong type or
    a bad value are a ValueError naming the field."""
    import pydantic

    _refuse_unknown(cls, data or {}, where)
    try:
        config = dagster_config(cls)(**(data or {}))
    except pydantic.ValidationError as e:
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors())
        raise ValueError(f"{where}: {problems}") from e
    return to_domain(config, cls)


def _refuse_unknown(cls: type, data, where: str) -> None:
    if not isinstance(data, dict):
        raise ValueError(f"{where} must be a mapping, got {type(data).__name__}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(set(data) - known)
    if unknown:
        raise ValueError(f"{where}: unknown keys {unknown}, expected some of {sorted(known)}")
    for name in known & set(data):
        if dataclasses.is_dataclass(hints[name]):
            _refuse_unknown(hints[name], data[name], f"{where}.{name}")
