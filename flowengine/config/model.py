"""The run description: a pydantic model of the YAML, checked for shape before anything runs.

The same model generates the JSON Schema editors use (`flowengine schema`).
"""

from __future__ import annotations

import difflib
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, \
    model_validator

from flowengine.errors import ConfigError
from flowengine.config.source import ConfigSource
from flowengine.core.fusion import FUSE_AUTO

__all__ = ["StageConfig", "SecurityConfig", "PlacementConfig", "ClusterConfig", "RunConfig",
           "parse_run_config", "json_schema"]


class PlacementConfig(BaseModel):
    """Where a stage's replicas run with `cluster: {engine: ray}` (docs/cluster.md)."""

    model_config = ConfigDict(extra="forbid")

    resources: dict[str, float] = Field(
        {},
        description="Ray resources each replica reserves on its host: custom ones "
                    "(`transcoder: 1`, given to a node by `ray start --resources`), `CPU`, "
                    "`memory`. Each replica reserves `CPU: 1` unless this names `CPU`.")
    labels: dict[str, str] = Field(
        {},
        description="Ray node labels the host must have (`ray start --labels`), e.g. "
                    "`{zone: eu-1}`; Ray's selector syntax (`!eu-1`, `in(a,b)`) works too.")
    spread: bool = Field(
        False, description="Put the replicas on different hosts as far as the cluster allows; "
                           "default: as few hosts as possible.")

    @field_validator("resources")
    @classmethod
    def _positive_amounts(cls, value: dict[str, float]) -> dict[str, float]:
        bad = [f"{name}: {amount:g}" for name, amount in value.items() if not amount >= 0]
        if bad:
            raise ValueError(f"resource amounts must be 0 or more, got {', '.join(bad)}")
        return value


class StageConfig(BaseModel):
    """One stage: an operator, its parameters, and how it is run."""

    model_config = ConfigDict(extra="forbid")

    name: str | None = Field(None, description="Unique stage name; defaults to the operator name.")
    op: str = Field(..., description="Operator name, as listed by `flowengine ops`.")
    params: dict[str, Any] = Field(default_factory=dict, description="Operator parameters.")
    inputs: list[str] | None = Field(
        None, description="Stages this one reads from; default: the stage before it.")
    replicas: int | Literal["auto"] = Field(
        1, description="Worker processes for this stage ('auto': one per core). Replicas share "
                       "out the streams (a files source's files): one stream always goes "
                       "through one replica, so more replicas than streams idle.")
    ordered: bool = Field(
        False, description="Spread each stream's messages over the replicas (stateless operators "
                           "only) and restore their order after the stage; default: each stream "
                           "sticks to one replica.")
    hwm: int = Field(64, ge=1, le=1_000_000,
                     description="High-water mark in messages on this stage's input edges.")
    on_error: Literal["fail", "skip"] = Field(
        "fail", description="What damaged input does: fail (stop, naming file or stream, byte "
                            "and time) or skip (damaged frames replaced by silence of their "
                            "duration and counted; on a files source, a file that cannot be "
                            "read skipped). The same setting as the on_error parameter of a "
                            "reader or decoder operator.")
    max_errors: int | None = Field(
        None, ge=0, description="With on_error: skip, fail once more than this many were skipped.")
    restart: Literal["never", "on-failure"] = Field(
        "never", description="on-failure: a replica that dies (killed, exception, hung) is "
                             "replaced by a new worker and the run goes on; see 'Restart' in "
                             "docs/architecture.md for what the affected streams lose.")
    max_restarts: int = Field(
        3, ge=0, le=1000, description="With restart: on-failure, how many replacements the "
                                      "stage may have in one run before a failure ends the run.")
    replay_messages: int = Field(
        1024, ge=1, le=1_000_000,
        description="With restart: on-failure on a stateless stage: how many unacknowledged "
                    "messages each sender keeps per replica to re-send to a replacement "
                    "(senders wait for acknowledgements when it is full).")
    replay_bytes: int = Field(
        64 * 1024 * 1024, ge=1024,
        description="... and how many bytes at most (the same wait when reached).")
    fuse_with: Literal["previous"] | None = Field(
        None, description="Run this stage in the same worker as the stage before it (its only "
                          "input), one Pipeline per stream: no hop between them.")
    placement: PlacementConfig | None = Field(
        None, description="With cluster: {engine: ray}: the hosts its replicas run on (Ray "
                          "resources, node labels, spread); without it, they run on the "
                          "coordinator's host. Ignored with engine: local.")

    @field_validator("inputs", mode="before")
    @classmethod
    def _one_input_as_list(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("replicas")
    @classmethod
    def _positive_replicas(cls, value: Any) -> Any:
        if isinstance(value, int) and value < 1:
            raise ValueError("replicas must be at least 1 (or 'auto')")
        return value

    @property
    def label(self) -> str:
        return self.name or self.op


class SecurityConfig(BaseModel):
    """How the engine's own sockets are protected (see docs/security.md)."""

    model_config = ConfigDict(extra="forbid")

    curve: bool = Field(
        False, description="Encrypt and authenticate every engine socket with ZeroMQ CURVE "
                           "(needs transport: tcp and `keys`).")
    keys: str | None = Field(
        None, description="Directory made by `flowengine keys DIR`: the run's server and client "
                          "keypairs (copy it to every host of the run).")


class ClusterConfig(BaseModel):
    """Which hosts run the workers: this machine (local), or a Ray cluster (docs/cluster.md)."""

    model_config = ConfigDict(extra="forbid")

    engine: Literal["local", "ray"] = Field(
        "local", description="local: every worker on this machine (forkserver). ray: on the "
                             "hosts of a Ray cluster (`pip install 'flowengine[ray]'`); implies "
                             "transport: tcp and CURVE.")
    address: str = Field(
        "auto", description="The Ray cluster: `auto` (the one this machine is part of, or "
                            "$RAY_ADDRESS) or the head's HOST:PORT.")
    placement_timeout_s: float = Field(
        30.0, gt=0, le=3600,
        description="How long to wait for Ray to find hosts for every stage's placement "
                    "before the run fails naming the stage and what it asked for.")
    keys: str | None = Field(
        None, description="The CURVE key directory's path on every host (default: "
                          "security.keys). Each host reads its keys there: keys never travel "
                          "through Ray.")

    @field_validator("address")
    @classmethod
    def _address_form(cls, value: str) -> str:
        host, sep, port = value.rpartition(":")
        if value != "auto" and not (sep and host and port.isdigit() and 0 < int(port) < 65536):
            raise ValueError(f"expected 'auto' or HOST:PORT (the head node's GCS address, "
                             f"e.g. 10.0.0.5:6379), got {value!r}")
        return value


class RunConfig(BaseModel):
    """A whole run: its stages, in order."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field("run", description="Name of the run, shown in logs and reports.")
    description: str | None = Field(None, description="What the run does, for people.")
    stages: list[StageConfig] = Field(
        ..., min_length=1, description="The stages, in order: a stage reads from stages above "
                                       "it (by default the one just before).")
    block_samples: int | None = Field(
        None, ge=16, le=1 << 20,
        description="Samples per message on PCM edges (larger = cheaper; smaller = lower latency).")
    transport: Literal["ipc", "tcp"] = Field("ipc", description="Data-plane transport between workers.")
    strict: bool = Field(
        False, description="Refuse an edge whose formats disagree (sample rate, channels, sample "
                           "type) instead of inserting the conversion that joins them (a "
                           "`resample` stage named `<stage>.join`, shown by `flowengine plan`).")
    fuse: Literal["auto"] | list[list[str]] | None = Field(
        None, description="Groups of consecutive stages that run inside one worker each "
                          "(`[a, b, c]` for one group, or a list of groups); or `auto`: the "
                          "planner cuts each chain of stages into up to as many workers as "
                          "there are cores, balanced by each operator's cost (`flowengine "
                          "plan` shows the groups and their costs).")
    security: SecurityConfig = Field(
        default_factory=SecurityConfig,
        description="CURVE encryption and authentication of the engine's tcp:// sockets.")
    cluster: ClusterConfig = Field(
        default_factory=ClusterConfig,
        description="Where the workers run: this machine (default) or a Ray cluster.")

    @field_validator("fuse", mode="before")
    @classmethod
    def _one_group_as_list(cls, value: Any) -> Any:
        if value is not None and value != FUSE_AUTO and not isinstance(value, list):
            raise ValueError(f"expected {FUSE_AUTO!r} (the planner groups the stages) or a "
                             f"list of stage names (one group) or of groups, got {value!r}")
        if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
            return [value]
        return value

    @model_validator(mode="after")
    def _cluster_defaults(self) -> "RunConfig":
        """Workers on other hosts talk over tcp://, encrypted unless the user says otherwise
        (config/validate.py refuses `transport: ipc` and warns about `curve: false`)."""
        if self.cluster.engine == "ray":
            if "transport" not in self.model_fields_set:
                self.transport = "tcp"
            if "curve" not in self.security.model_fields_set:
                self.security.curve = True
        return self


def _error_path(loc: tuple) -> tuple:
    # pydantic locations are ("stages", 2, "hwm"); drop union-branch tags like "int".
    return tuple(part for part in loc if isinstance(part, int) or not str(part).startswith(
        ("literal[", "function-", "int", "str", "list[")))


def _describe_key(source: ConfigSource, path: tuple) -> str:
    """"stage 'gain': hwm" for a key of a stage, else the dotted path."""
    stages = source.data.get("stages") if isinstance(source.data, dict) else None
    if len(path) >= 2 and path[0] == "stages" and isinstance(path[1], int) and \
            isinstance(stages, list) and path[1] < len(stages) and isinstance(stages[path[1]], dict):
        stage = stages[path[1]]
        name = stage.get("name") or stage.get("op") or f"#{path[1] + 1}"
        rest = ".".join(str(p) for p in path[2:]) or "(the stage)"
        return f"stage {name!r}: {rest}"
    return ".".join(str(p) for p in path) or "(top level)"


def parse_run_config(source: ConfigSource) -> RunConfig:
    """Validate the document's shape; every problem is reported with its file:line and key."""
    if not isinstance(source.data, dict):
        raise ConfigError(f"{source.filename}: a run config must be a mapping with a 'stages' list, "
                          f"got {type(source.data).__name__}")
    try:
        return RunConfig.model_validate(source.data)
    except ValidationError as exc:
        problems = []
        for error in exc.errors():
            path = _error_path(error["loc"])
            message = error["msg"].removeprefix("Value error, ")
            if error["type"] == "extra_forbidden":
                message = "unknown key" + _close_key_hint(error["loc"])
            problems.append(f"{source.where(path)}: {_describe_key(source, path)}: {message}")
        raise ConfigError("invalid run config:\n  " + "\n  ".join(dict.fromkeys(problems))) from None


def _close_key_hint(loc: tuple) -> str:
    """"; did you mean 'params'?" for a misspelt key of a stage or of the run."""
    model = {1: RunConfig, 3: StageConfig if loc[:1] == ("stages",) else None}.get(len(loc))
    if model is None:
        return ""
    close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1, cutoff=0.6)
    return f"; did you mean {close[0]!r}?" if close else ""


def json_schema() -> dict:
    """JSON Schema of the run config format, for editors."""
    schema = RunConfig.model_json_schema()
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    schema["title"] = "flowengine run config"
    return schema
