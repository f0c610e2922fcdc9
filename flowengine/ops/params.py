"""An operator's parameters as plain data: what its factory's signature says, without pydantic.

A factory's keyword parameters, their type hints and defaults are the operator's
parameter spec (flowengine/ops/registry.py says how an operator is written). This
module reads them (`params_of`), names their types for people (`type_name`), and
gives the hints operators share: `FormatParam`, `PartialFormatParam`, and `Convert`,
an operator's own conversion of a value, which flowengine/ops/param_checks.py turns
into pydantic's validator when a process validates parameters. A worker reads specs
but never validates, so nothing here imports pydantic.
"""

from __future__ import annotations

import inspect
import types
import typing
from dataclasses import dataclass
from typing import Annotated, Any, Callable, Literal

from flowengine.errors import ConfigError
from flowengine.audio.format import AudioFormat, as_format, format_mapping, format_problem

__all__ = ["Convert", "FormatParam", "PartialFormatParam", "ParamSpec", "type_name",
           "params_of", "check_signature"]


@dataclass(frozen=True)
class Convert:
    """An operator's own conversion of a parameter's value, written in its hint:
    `Annotated[list[float], Convert(as_list, "before")]`. Mode "plain": `function` alone
    checks and converts the value (a ValueError says what is wrong); "before": it runs
    first, then the value is checked against the hint's type. (pydantic's PlainValidator
    and BeforeValidator, which it becomes: see param_checks.py.)"""

    function: Callable[[Any], Any]
    mode: Literal["plain", "before"] = "plain"


# An AudioFormat parameter: an AudioFormat, or any way of writing one in YAML (FORMAT_FORMS: a
# mapping, '48000/2/f32', a rate). A run config fills the keys a stage leaves out from its
# input's format before the operator sees them (config/validate.py).
FormatParam = Annotated[AudioFormat, Convert(as_format)]


def _format_keys(value: Any) -> AudioFormat | dict:
    """A whole format as an AudioFormat; some of its keys as a mapping (filled in later)."""
    if isinstance(value, AudioFormat):
        return value
    problem = format_problem(value)
    if problem is not None:
        raise ValueError(problem)
    mapping = format_mapping(value)
    return as_format(mapping) if "sample_rate" in mapping and "channels" in mapping else mapping


# A format that may leave keys out for the operator to fill in at run time (a file source:
# from each file's own format).
PartialFormatParam = Annotated[AudioFormat, Convert(_format_keys)]


def type_name(tp: Any) -> str:
    """A readable name for a type hint: 'float | None', 'list[float]', "'pcm' | 'packet'"."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        return type_name(args[0])
    if origin in (typing.Union, types.UnionType):
        return " | ".join(type_name(a) for a in args)
    if origin is Literal:
        return " | ".join(repr(a) for a in args)
    if tp is type(None):
        return "None"
    if tp is AudioFormat:
        return "format"
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(type_name(a) for a in args)}]"
    return getattr(tp, "__name__", str(tp))


@dataclass(frozen=True)
class ParamSpec:
    """One parameter of an operator."""

    name: str
    type: Any
    default: Any
    required: bool
    doc: str = ""

    @property
    def type_name(self) -> str:
        return type_name(self.type)


def _param_docs(factory: Callable) -> dict[str, str]:
    docs = {}
    for line in (inspect.getdoc(factory) or "").splitlines():
        name, sep, text = line.strip().partition(":")
        if sep and name.isidentifier():
            docs[name] = text.strip()
    return docs


def check_signature(name: str, factory: Callable) -> None:
    """ConfigError unless every parameter of the factory is a plain keyword parameter with a
    type hint (checked when it registers, without evaluating the hints)."""
    annotations = getattr(factory, "__annotations__", {})
    for p in inspect.signature(factory).parameters.values():
        if p.kind not in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD):
            raise ConfigError(f"operator {name!r}: parameter {p.name!r} must be a plain keyword "
                              f"parameter (no *args/**kwargs): the signature is the spec")
        if p.name not in annotations:
            raise ConfigError(f"operator {name!r}: parameter {p.name!r} has no type hint")


def params_of(factory: Callable, shared_docs: dict[str, str]) -> tuple[ParamSpec, ...]:
    hints = typing.get_type_hints(factory, include_extras=True)
    docs = {**shared_docs, **_param_docs(factory)}
    params = []
    for p in inspect.signature(factory).parameters.values():
        required = p.default is inspect.Parameter.empty
        params.append(ParamSpec(p.name, hints[p.name], None if required else p.default,
                                required, docs.get(p.name, "")))
    return tuple(params)
