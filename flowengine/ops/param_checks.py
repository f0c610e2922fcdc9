"""Operator parameters checked by pydantic, one parameter at a time, by its type hint.

Only a process that validates parameters imports this module, and pydantic with it: the
command and the in-process runner (validating a run), a library's `registry.create`. A
worker builds its nodes from the values the coordinator validated (`Registry.build`), so
neither it nor the forkserver pays for pydantic (~50 ms of each start).

Each type hint gets one strict TypeAdapter (an int is a valid float; a string is not a
number, a bool is not an int), shared by every operator and by the run's validation
(config/validate.py), so checking five operators builds a handful of small validators
rather than a model per operator (~7 ms of the command's start for configs/tone.yaml).
Operators state their own conversions with `Convert` (flowengine/ops/params.py), which
this module turns into pydantic's validator of the same mode; a plugin may also write
pydantic's own validators in its hints, which pass through unchanged.
"""

from __future__ import annotations

import functools
import types
import typing
from typing import Annotated, Any

import pydantic
from pydantic import BeforeValidator, ConfigDict, PlainValidator

from flowengine.errors import ConfigError
from flowengine.ops.params import Convert

__all__ = ["adapter", "validated", "pydantic_type"]

_VALIDATORS = {"plain": PlainValidator, "before": BeforeValidator}


def adapter(tp: Any) -> pydantic.TypeAdapter:
    """The strict validator of one parameter type hint (built once per hint; each time for
    a hint that cannot be a dictionary key, such as a plugin's with a list in it)."""
    try:
        hash(tp)
    except TypeError:
        return _adapter(tp)
    return _cached_adapter(tp)


def _adapter(tp: Any) -> pydantic.TypeAdapter:
    return pydantic.TypeAdapter(pydantic_type(tp), config=ConfigDict(
        strict=True, arbitrary_types_allowed=True))


_cached_adapter = functools.lru_cache(maxsize=None)(_adapter)


def validated(spec: Any, params: dict[str, Any]) -> dict[str, Any]:
    """`params` (known keys, every required one: the registry checked) checked and converted
    by each parameter's type, defaults filled in; or one ConfigError naming the first
    invalid parameter, and the others."""
    values: dict[str, Any] = {}
    invalid: dict[str, dict] = {}
    for p in spec.params:
        if p.name not in params:
            values[p.name] = p.default
            continue
        try:
            values[p.name] = adapter(p.type).validate_python(params[p.name])
        except pydantic.ValidationError as exc:
            # pydantic reports one error per branch of a union: the first says enough
            invalid[p.name] = exc.errors(include_url=False)[0]
    if invalid:
        raise ConfigError(_describe(spec, params, invalid))
    return values


def pydantic_type(tp: Any) -> Any:
    """A type hint with every `Convert` in it (inside unions and lists too) made pydantic's
    validator of the same mode."""
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is Annotated:
        return Annotated[(pydantic_type(args[0]),
                          *(_VALIDATORS[m.mode](m.function) if isinstance(m, Convert) else m
                            for m in tp.__metadata__))]
    if origin in (typing.Union, types.UnionType):
        return typing.Union[tuple(pydantic_type(a) for a in args)]
    if origin is not None and args and origin is not typing.Literal:
        return origin[tuple(pydantic_type(a) for a in args)]
    return tp


def _describe(spec: Any, params: dict[str, Any], invalid: dict[str, dict]) -> str:
    """One ConfigError message: operator, parameter, expected vs got, pydantic's reason."""
    param, err = next(iter(invalid.items()))
    value = params[param]
    reason = err["msg"].removeprefix("Value error, ")
    message = (f"operator {spec.name!r}: parameter {param!r} expects "
               f"{spec.param(param).type_name}, got {value!r} ({type(value).__name__}): {reason}")
    others = list(invalid)[1:]
    if others:
        message += f" (also invalid: {', '.join(others)})"
    return message
