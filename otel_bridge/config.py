"""The bridge's YAML config, shaped like an OpenTelemetry Collector's (DESIGN.md decisions 8 and 10).

``receivers`` / ``processors`` / ``exporters`` / ``service.pipelines``, ``${env:VAR}`` and ``${env:VAR:-default}``
expansion in values (never keys), pydantic models that reject unknown keys, and one error line per problem
(``path.to.key: what was expected``) so a bad file is refused at start with every mistake listed at once.
"""

from __future__ import annotations

import difflib
import json
import os
import re
import sys
from importlib import resources
from pathlib import Path
from typing import Annotated, Any, get_args

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator

from otel_bridge.receivers.otlp import is_loopback

__all__ = [
    "BridgeConfig", "ConfigError", "default_config_path", "is_loopback", "load_config", "parse_config",
    "parse_duration", "parse_size", "register", "split_endpoint",
]

# ---------------------------------------------------------------- durations, sizes, endpoints

_DURATION_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h|d)")
_DURATION = re.compile(rf"(?:{_DURATION_PART.pattern})+")
_SIZE_UNITS = {"": 1, "B": 1, "KB": 1000, "MB": 1000**2, "GB": 1000**3, "KiB": 1024, "MiB": 1024**2, "GiB": 1024**3}
_SIZE = re.compile(r"(\d+(?:\.\d+)?)\s*(B|KB|MB|GB|KiB|MiB|GiB)?")


def _show(value: Any) -> str:
    """A value as it would look in YAML, for 'got ...' in error lines."""
    if value is None or isinstance(value, (bool, str)):
        return json.dumps(value, ensure_ascii=False)  # null, true, false, "text"
    return "a mapping" if isinstance(value, dict) else "a list" if isinstance(value, (list, tuple)) else repr(value)


def parse_duration(text: str) -> float:
    """``500ms``, ``5s``, ``2m``, ``1h``, ``90d`` or Go-style ``1h30m`` → seconds; a bare number has no unit, so no."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text.strip()):
        raise ValueError(f'expected a duration like "1s" or "500ms", got {_show(text)}')
    return sum(float(n) * _DURATION_UNITS[u] for n, u in _DURATION_PART.findall(text.strip()))


def parse_size(value: str | int) -> int:
    """``512KiB``, ``16MiB``, ``1GiB`` (also decimal ``KB``/``MB``/``GB``) or a plain integer of bytes → bytes."""
    if isinstance(value, int) and not isinstance(value, bool) and value >= 0:
        return value
    m = _SIZE.fullmatch(value.strip()) if isinstance(value, str) else None
    if m is None:
        raise ValueError(f'expected a size like "16MiB" or "512KiB", got {_show(value)}')
    return int(float(m.group(1)) * _SIZE_UNITS[m.group(2) or ""])


def split_endpoint(endpoint: str) -> tuple[str, int]:
    """``host:port`` (IPv6 as ``[::1]:4317``) → (host, port); ValueError with the config wording otherwise."""
    host, sep, port = endpoint.rpartition(":") if isinstance(endpoint, str) else ("", "", "")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    elif ":" in host:
        host = ""
    if not sep or not host or not port.isdigit() or any(c in host for c in "/[] "):
        raise ValueError(f"expected host:port, got {_show(endpoint)}")
    if not 1 <= int(port) <= 65535:
        raise ValueError(f"expected a port between 1 and 65535, got {_show(endpoint)}")
    return host, int(port)


def _endpoint(value: Any) -> Any:
    split_endpoint(value)
    return value


def _positive_duration(value: Any) -> float:
    if parse_duration(value) <= 0:
        raise ValueError(f'expected a duration above zero like "1s", got {_show(value)}')
    return parse_duration(value)


def _matching(pattern: str, expected: str) -> BeforeValidator:
    """A string check with the config's wording; non-strings fall through to pydantic's own type error."""
    def check(value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(pattern, value):
            raise ValueError(f"expected {expected}, got {_show(value)}")
        return value
    return BeforeValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Endpoint = Annotated[str, BeforeValidator(_endpoint)]
Url = Annotated[str, _matching(r"(https?://[^\s/?#]+(?:[/?#]\S*)?)?", 'an http(s) url like "http://127.0.0.1:8080"')]
Identifier = Annotated[str, _matching(r"[A-Za-z_][A-Za-z0-9_]*",
                                      'a name of letters, digits and underscores like "otel_bridge"')]
Host = Annotated[str, _matching(r"[A-Za-z0-9_.-]*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*",
                                'a bare host name like "clickhouse.internal" (port and scheme are separate keys)')]
ReleaseKey = Annotated[str, _matching(r"[^@]+@.+", 'a key like "service@version"')]
LogLevel = Annotated[str, _matching(r"debug|info|warning|error", "one of debug, info, warning, error")]


def _plain(field: str) -> property:
    """A read-only accessor for a SecretStr field: secrets stay out of repr(), logs and dumps, yet are one call away."""
    def get(self: BaseModel) -> str:
        return getattr(self, field).get_secret_value()
    return property(get, doc=f"The plain {field}, for the one place that sends it.")


class _FieldErrors(ValueError):
    """Raised by a model's cross-field check: ``(sub.path, message)`` pairs the error translator appends to the loc."""

    def __init__(self, *problems: tuple[str, str]) -> None:
        super().__init__("; ".join(m for _, m in problems))
        self.problems = problems


# ---------------------------------------------------------------- the models


class _Model(BaseModel):
    """Unknown keys are errors; a component written as ``runs:`` (null) means "all defaults", as in the collector."""

    model_config = ConfigDict(extra="forbid", frozen=True, hide_input_in_errors=True)

    @model_validator(mode="before")
    @classmethod
    def _null_means_defaults(cls, data: Any) -> Any:
        return {} if data is None else data

    @model_validator(mode="after")
    def _cross_check(self) -> Any:
        problems = self._problems()
        if problems:
            raise _FieldErrors(*problems)
        return self

    def _problems(self) -> list[tuple[str, str]]:
        """Cross-field checks as ``(sub.key, message)``; they run once the model's own fields are valid."""
        return []


class GrpcProtocol(_Model):
    endpoint: Endpoint = "127.0.0.1:4317"
    max_recv_msg_size: Size = 16 * 1024**2


def _http_not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("cannot be disabled, the http api shares this listener")
    return value


class HttpProtocol(_Model):
    endpoint: Endpoint = "127.0.0.1:4318"
    max_request_body_size: Size = 16 * 1024**2


class OtlpProtocols(_Model):
    grpc: GrpcProtocol | None = GrpcProtocol()  # null turns gRPC off
    http: Annotated[HttpProtocol, BeforeValidator(_http_not_null)] = HttpProtocol()


class OtlpAuth(_Model):
    bearer_token: SecretStr = SecretStr("")

    bearer_token_value = _plain("bearer_token")


class OtlpSpool(_Model):
    """Write-ahead spool of accepted requests (decision 6): what was acknowledged survives a crash."""

    enabled: bool = True
    max_size: Size = 512 * 1024 * 1024
    fsync: bool = False  # survive a power cut too, at the cost of one fsync per request


class OtlpReceiver(_Model):
    protocols: OtlpProtocols = OtlpProtocols()
    auth: OtlpAuth = OtlpAuth()
    spool: OtlpSpool = OtlpSpool()

    def _problems(self) -> list[tuple[str, str]]:
        """Decision 10: only loopback listens without a token; two listeners on one address cannot both bind."""
        endpoints = [p.endpoint for p in (self.protocols.grpc, self.protocols.http) if p is not None]
        exposed = [e for e in endpoints if not is_loopback(split_endpoint(e)[0])]
        problems = []
        if exposed and not self.auth.bearer_token_value:
            problems.append(("auth.bearer_token", f"required when binding a non-loopback address ({', '.join(exposed)})"))
        if len(endpoints) == 2 and split_endpoint(endpoints[0]) == split_endpoint(endpoints[1]):
            problems.append(("protocols.http.endpoint", f"same address as protocols.grpc.endpoint ({endpoints[0]})"))
        return problems


class Receivers(_Model):
    otlp: OtlpReceiver = OtlpReceiver()


class RunsProcessor(_Model):
    wait: Duration = 5.0
    max_wait: Duration = 30.0
    max_traces: int = Field(10_000, ge=1)

    def _problems(self) -> list[tuple[str, str]]:
        if self.max_wait < self.wait:
            return [("max_wait", f"must be at least wait ({self.wait:g}s), got {self.max_wait:g}s")]
        return []


class ObservatoryProcessor(_Model):
    app_id: str = ""


class FlightDeckProcessor(_Model):
    workspace_id: str = "ws_local"
    agent_id: str = ""
    release_id: str = ""
    release_map: dict[ReleaseKey, str] = {}  # "service.name@service.version" → release
    tenant_id: str = "default"
    task_id: str = ""
    environment: str = "local"
    emit_run_start: bool = False


class RedactProcessor(_Model):
    secrets: bool = True
    pii: bool = False


class Processors(_Model):
    runs: RunsProcessor = RunsProcessor()
    observatory: ObservatoryProcessor = ObservatoryProcessor()
    flightdeck: FlightDeckProcessor = FlightDeckProcessor()
    redact: RedactProcessor = RedactProcessor()


class Batch(_Model):
    """The shared batching engine's knobs (decision 6)."""

    max_batch: int = Field(100, ge=1)
    interval: PositiveDuration = 1.0
    max_queue: int = Field(20_000, ge=1)

    def _problems(self) -> list[tuple[str, str]]:
        bad = self.max_queue < self.max_batch
        return [("max_queue", f"must be at least max_batch ({self.max_batch}), got {self.max_queue}")] if bad else []


class ClickHouseBatch(Batch):
    max_batch: int = Field(10_000, ge=1)
    max_queue: int = Field(200_000, ge=1)


class ClickHouseExporter(_Model):
    data_dir: str = "./.otel-bridge/data"  # embedded chDB unless host is set
    host: Host = ""
    port: int = Field(8123, ge=1, le=65535)
    username: str = "default"
    password: SecretStr = SecretStr("")
    database: Identifier = "otel_bridge"
    secure: bool = False
    cluster: str = ""
    create_schema: bool = True
    ttl: Duration = 90 * 86400.0
    text_ttl: Duration = 30 * 86400.0  # 0s: message text lives as long as its row
    text_limit: int = Field(4096, ge=0)
    batch: ClickHouseBatch = ClickHouseBatch()

    def _problems(self) -> list[tuple[str, str]]:
        problems = []
        if self.cluster and not self.host:
            problems.append(("cluster", "requires host (embedded chdb is a single node)"))
        for key in ("ttl", "text_ttl"):
            seconds = getattr(self, key)
            if seconds % 86400 or (key == "ttl" and seconds <= 0):
                problems.append((key, f'expected whole days like "90d", got {seconds / 86400:g} days'))
        if 0 < self.ttl < self.text_ttl:
            problems.append(("text_ttl", f"must not exceed ttl ({self.ttl / 86400:g}d)"))
        return problems

    password_value = _plain("password")

    @property
    def embedded(self) -> bool:
        """chDB in ``data_dir`` rather than a server."""
        return not self.host

    @property
    def ttl_days(self) -> int:
        return int(self.ttl // 86400)

    @property
    def text_ttl_days(self) -> int | None:
        """None: message text lives as long as its row."""
        return int(self.text_ttl // 86400) or None


class ObservatoryExporter(_Model):
    url: Url = ""  # empty: exporter off
    api_key: SecretStr = SecretStr("")
    batch: Batch = Batch()
    dead_letter: str = ""

    api_key_value = _plain("api_key")


class FlightDeckExporter(_Model):
    url: Url = ""  # empty: exporter off
    token: SecretStr = SecretStr("")
    batch: Batch = Batch()
    dead_letter: str = "./.otel-bridge/flightdeck-dead-letter.jsonl"

    token_value = _plain("token")


class Exporters(_Model):
    clickhouse: ClickHouseExporter = ClickHouseExporter()
    observatory: ObservatoryExporter = ObservatoryExporter()
    flightdeck: FlightDeckExporter = FlightDeckExporter()


def _component(kind: str, section: type[_Model]):
    def check(value: Any) -> Any:
        if isinstance(value, str) and value not in section.model_fields:
            raise ValueError(f"unknown {kind} {_show(value)}")
        return value
    return Annotated[str, BeforeValidator(check)]


ReceiverName = _component("receiver", Receivers)
ProcessorName = _component("processor", Processors)
ExporterName = _component("exporter", Exporters)


class Pipeline(_Model):
    receivers: Annotated[list[ReceiverName], Field(min_length=1)] = ["otlp"]
    processors: list[ProcessorName] = ["runs", "observatory", "flightdeck", "redact"]
    exporters: Annotated[list[ExporterName], Field(min_length=1)] = ["clickhouse", "observatory", "flightdeck"]

    def _problems(self) -> list[tuple[str, str]]:
        repeats = {k: sorted({n for n in getattr(self, k) if getattr(self, k).count(n) > 1}) for k in Pipeline.model_fields}
        return [(k, f"lists {', '.join(map(_show, names))} more than once") for k, names in repeats.items() if names]


class Pipelines(_Model):
    traces: Pipeline = Pipeline()


class Telemetry(_Model):
    log_level: LogLevel = "info"


class Service(_Model):
    pipelines: Pipelines = Pipelines()
    telemetry: Telemetry = Telemetry()


class BridgeConfig(_Model):
    receivers: Receivers = Receivers()
    processors: Processors = Processors()
    exporters: Exporters = Exporters()
    service: Service = Service()

    def enabled_exporters(self) -> list[str]:
        """The pipeline's exporters that will run: ClickHouse always, Observatory/FlightDeck once they have a url."""
        return [n for n in self.service.pipelines.traces.exporters if n == "clickhouse" or getattr(self.exporters, n).url]


# ---------------------------------------------------------------- errors, expansion, loading


class ConfigError(ValueError):
    """Every problem in one config, one ``path.to.key: what was expected`` line each."""

    def __init__(self, errors: list[str], source: str = "<string>") -> None:
        self.errors, self.source = list(errors), source
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.source}:\n" + "\n".join(f"  {e}" for e in self.errors)


_SECTION_KINDS = {("receivers",): "receiver", ("processors",): "processor", ("exporters",): "exporter"}
_TYPE_WORDS = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "an integer",
    "bool_type": "true or false", "bool_parsing": "true or false", "string_type": "a string",
    "model_type": "a mapping", "model_attributes_type": "a mapping", "dict_type": "a mapping", "list_type": "a list",
}
_SECRETS = {"bearer_token", "password", "api_key", "token"}  # never echoed back, not even in an error
_BOUND_WORDS = {"greater_than_equal": "at least", "less_than_equal": "at most", "greater_than": "above"}


def _path(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        if part == "[key]":  # pydantic's marker for a bad mapping key; the key itself is already in loc
            continue
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(root)"


def _fields_at(loc: tuple[Any, ...]) -> list[str]:
    """The keys the model at ``loc`` accepts, for 'did you mean' hints."""
    cls: Any = BridgeConfig
    for part in loc:
        field = cls.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            return []
        types = (field.annotation, *get_args(field.annotation))  # GrpcProtocol | None → GrpcProtocol
        cls = next((t for t in types if isinstance(t, type) and issubclass(t, BaseModel)), None)
        if cls is None:
            return []
    return list(cls.model_fields)


def _unknown_key(loc: tuple[Any, ...]) -> str:
    known, kind = _fields_at(loc[:-1]), _SECTION_KINDS.get(tuple(loc[:-1]), "key")
    close = difflib.get_close_matches(str(loc[-1]), known, n=1)
    if close:
        return f"unknown {kind}, did you mean {_show(close[0])}?"
    return f"unknown {kind}, expected one of {', '.join(known)}" if known else f"unknown {kind}"


def _lines(exc: ValidationError, data: Any) -> list[str]:
    """pydantic's errors → our one-line, lower-case, key-naming form."""
    lines = []
    for err in exc.errors(include_url=False):
        loc, kind, ctx = tuple(err["loc"]), err["type"], err.get("ctx") or {}
        cause = ctx.get("error")
        if isinstance(cause, _FieldErrors):
            lines += [f"{_path(loc + tuple(sub.split('.')))}: {msg}" for sub, msg in cause.problems]
            continue
        if kind == "extra_forbidden":
            msg = _unknown_key(loc)
        elif kind in _TYPE_WORDS:
            got = "a value that is not shown" if loc[-1] in _SECRETS else _show(_lookup(data, loc))
            msg = f"expected {_TYPE_WORDS[kind]}, got {got}"
        elif kind == "value_error":
            msg = str(cause)
        elif kind == "too_short":
            msg = "must list at least one name"
        elif kind in _BOUND_WORDS:
            msg = f"must be {_BOUND_WORDS[kind]} {next(iter(ctx.values()))}, got {_show(_lookup(data, loc))}"
        else:
            msg = err["msg"][:1].lower() + err["msg"][1:]
        lines.append(f"{_path(loc)}: {msg}")
    return lines


def _lookup(data: Any, loc: tuple[Any, ...]) -> Any:
    """The raw value at ``loc`` (error messages quote what the user wrote, not a coerced form)."""
    for part in loc:
        try:
            data = data[part]
        except (KeyError, IndexError, TypeError):
            return None
    return data


_REFERENCE = re.compile(r"\$\$|\$\{([^}]*)\}")
_ENV_REFERENCE = re.compile(r"env:([A-Za-z_][A-Za-z0-9_]*)(?::-(.*))?", re.S)


def expand_env(data: Any, environ: dict[str, str], errors: list[str], loc: tuple[Any, ...] = ()) -> Any:
    """A copy of ``data`` with ``${env:VAR}`` / ``${env:VAR:-default}`` expanded in string values, ``$$`` → ``$``.

    As in the collector, the default applies only when the variable is unset, and an unset variable without a
    default expands to the empty string. Keys are never expanded.
    """
    if isinstance(data, dict):
        return {k: expand_env(v, environ, errors, loc + (k,)) for k, v in data.items()}
    if isinstance(data, list):
        return [expand_env(v, environ, errors, loc + (i,)) for i, v in enumerate(data)]
    if not isinstance(data, str) or "$" not in data:
        return data

    def one(m: re.Match[str]) -> str:
        if m.group(0) == "$$":
            return "$"
        ref = _ENV_REFERENCE.fullmatch(m.group(1))
        if ref is None and m.group(1).startswith("env:"):
            name = m.group(1)[4:].partition(":-")[0]
            errors.append(f"{_path(loc)}: invalid environment variable name {_show(name)} in {_show(m.group(0))}")
            return m.group(0)
        if ref is None:
            expected = '"${env:VAR}" or "${env:VAR:-default}"'
            errors.append(f"{_path(loc)}: unsupported reference {_show(m.group(0))}, expected {expected}")
            return m.group(0)
        name, default = ref.groups()
        return environ[name] if name in environ else (default or "")  # a set-but-empty variable stays empty

    return _REFERENCE.sub(one, data)


class _Loader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys: YAML would otherwise keep the last one silently."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> dict[Any, Any]:
    loader.flatten_mapping(node)
    seen: set[Any] = set()
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key in seen:
            raise yaml.constructor.ConstructorError(None, None, f"duplicate key {_show(key)}", key_node.start_mark)
        seen.add(key)
    return loader.construct_mapping(node, deep=True)


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)


def parse_config(text: str, *, source: str = "<string>", environ: dict[str, str] | None = None) -> BridgeConfig:
    """Parse, expand (``environ``, default ``os.environ``) and validate a config text; ConfigError lists every problem."""
    try:
        data = yaml.load(text, Loader=_Loader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}{exc.problem or exc.context}"], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid yaml: {exc}"], source) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError([f"(root): expected a mapping of sections, got {_show(data)}"], source)
    errors: list[str] = []
    data = expand_env(data, dict(os.environ) if environ is None else environ, errors)
    try:
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        bad_refs = {e.partition(": ")[0] for e in errors}  # a failed reference already explains its value
        errors += [line for line in _lines(exc, data) if line.partition(": ")[0] not in bad_refs]
    if errors:
        raise ConfigError(errors, source)
    return config


def default_config_path() -> Path:
    """The packaged ``otel_bridge/config/bridge.yaml`` — the user's starting point."""
    return Path(str(resources.files("otel_bridge").joinpath("config/bridge.yaml")))


def load_config(path: str | Path | None = None, *, data_dir: str | None = None) -> BridgeConfig:
    """Read and validate a config file (None: the packaged default); ``data_dir`` overrides the chDB directory."""
    path = default_config_path() if path is None else Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise ConfigError([f"cannot read the file: {reason.lower()}"], str(path)) from None
    config = parse_config(text, source=str(path))
    if data_dir is not None:
        clickhouse = config.exporters.clickhouse.model_copy(update={"data_dir": data_dir})
        exporters = config.exporters.model_copy(update={"clickhouse": clickhouse})
        config = config.model_copy(update={"exporters": exporters})
    return config


# ---------------------------------------------------------------- CLI: `otel-bridge config check [FILE]`


def _check(args: Any) -> int:
    name = args.file or str(default_config_path())
    try:
        config = load_config(args.file)
    except ConfigError as exc:
        print(str(exc), file=sys.stderr)
        return 1
    print(f"{name}: ok\nenabled exporters: {', '.join(config.enabled_exporters()) or '(none)'}")
    return 0


def register(subparsers: Any) -> None:
    """Add ``config check`` to the main CLI's subcommands."""
    parser = subparsers.add_parser("config", help="check a bridge config file")
    sub = parser.add_subparsers(dest="config_command", required=True)
    check = sub.add_parser("check", help="validate a config; every problem is listed, exit code 1 if any")
    check.add_argument("file", nargs="?", help="bridge YAML (default: the packaged otel_bridge/config/bridge.yaml)")
    check.set_defaults(func=_check)
