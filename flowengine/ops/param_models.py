"""Operator parameters checked by pydantic: one model per operator, built from its signature.

Only a process that validates parameters imports this module, and pydantic with it: the
command and the in-process runner (validating a run), a library's `registry.create`. A
worker builds its nodes from the values the coordinator validated (`Registry.build`), so
neither it nor the forkserver pays for pydantic (~50 ms of each start).

Operators state their own conversions with `Convert` (flowengine/ops/params.py), which
this module turns into pydantic's validator of the same mode; a plugin may also write
pydantic's own validators in its hints, which pass through unchanged.
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any

import pydantic
from pydantic import BeforeValidator, ConfigDict, PlainValidator

from flowengine.errors import ConfigError
from flowengine.ops.params import Convert

__all__ = ["build_model", "validated", "pydantic_type"]

_VALIDATORS = {"plain": PlainValidator, "before": BeforeValidator}


def build_model(spec: Any) -> type[pydantic.BaseModel]:
    """The strict model of an OperatorSpec's parameters (an int is a valid float; a string
    is not a number, a bool is not an int; unknown keys are refused)."""
    fields = {p.name: (pydantic_type(p.type), ... if p.required else p.default)
              for p in spec.params}
    return pydantic.create_model(
        f"{spec.name}_params",
        __config__=ConfigDict(extra="forbid", strict=True, arbitrary_types_allowed=True),
        **fields)


def validated(spec: Any, model: type[pydantic.BaseModel], params: dict[str, Any]
              ) -> dict[str, Any]:
    """`params` checked and converted by `model`, defaults filled in; or one ConfigError."""
    try:
        values = model.model_validate(params)
    except pydantic.ValidationError as exc:
        raise ConfigError(_describe_validation(spec, exc)) from None
    return {p.name: getattr(values, p.name) for p in spec.params}


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


def _describe_validation(spec: Any, exc: pydantic.ValidationError) -> str:
    """One ConfigError message for pydantic's errors: operator, parameter, expected vs got."""
    first: dict[str, dict] = {}        # pydantic reports one error per union branch: keep one
    for err in exc.errors(include_url=False):
        first.setdefault(str(err["loc"][0]), err)
    param, err = next(iter(first.items()))
    value = err.get("input")
    reason = err["msg"].removeprefix("Value error, ")
    message = (f"operator {spec.name!r}: parameter {param!r} expects "
               f"{spec.param(param).type_name}, got {value!r} ({type(value).__name__}): {reason}")
    others = list(first)[1:]
    if others:
        message += f" (also invalid: {', '.join(others)})"
    return message
