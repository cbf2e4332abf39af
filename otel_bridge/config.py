"""The bridge's YAML config, shaped like an OpenTelemetry Collector's (DESIGN.md decisions 8 and 10).

``receivers`` / ``processors`` / ``exporters`` / ``service.pipelines``, ``${env:VAR}`` and ``${env:VAR:-default}``
expansion in values (never keys), pydantic models that reject unknown keys, and one error line per problem
(``path.to.key: what was expected``) so a bad file is refused at start with every mistake listed at once.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Annotated, Any

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, SecretStr, ValidationError, model_validator

from otel_bridge.config_syntax import (
    FieldErrors,
    StrictLoader,
    error_lines,
    expand_env,
    parse_duration,
    parse_size,
    show,
    split_endpoint,
)
from otel_bridge.receivers.otlp import is_loopback

__all__ = [
    "BridgeConfig",
    "ConfigError",
    "default_config_path",
    "is_loopback",
    "load_config",
    "parse_config",
    "parse_duration",
    "parse_size",
    "register",
    "split_endpoint",
]


def _endpoint(value: Any) -> Any:
    split_endpoint(value)
    return value


def _positive_duration(value: Any) -> float:
    if parse_duration(value) <= 0:
        raise ValueError(f'expected a duration above zero like "1s", got {show(value)}')
    return parse_duration(value)


def _matching(pattern: str, expected: str) -> BeforeValidator:
    """A string check with the config's wording; non-strings fall through to pydantic's own type error."""

    def check(value: Any) -> Any:
        if isinstance(value, str) and not re.fullmatch(pattern, value):
            raise ValueError(f"expected {expected}, got {show(value)}")
        return value

    return BeforeValidator(check)


Duration = Annotated[float, BeforeValidator(parse_duration)]
PositiveDuration = Annotated[float, BeforeValidator(_positive_duration)]
Size = Annotated[int, BeforeValidator(parse_size)]
Endpoint = Annotated[str, BeforeValidator(_endpoint)]
Url = Annotated[str, _matching(r"(https?://[^\s/?#]+(?:[/?#]\S*)?)?", 'an http(s) url like "http://127.0.0.1:8080"')]
Identifier = Annotated[
    str, _matching(r"[A-Za-z_][A-Za-z0-9_]*", 'a name of letters, digits and underscores like "otel_bridge"')
]
Host = Annotated[
    str,
    _matching(
        r"[A-Za-z0-9_.-]*|[0-9A-Fa-f:.]*:[0-9A-Fa-f:.]*",
        'a bare host name like "clickhouse.internal" (port and scheme are separate keys)',
    ),
]
ReleaseKey = Annotated[str, _matching(r"[^@]+@.+", 'a key like "service@version"')]
LogLevel = Annotated[str, _matching(r"debug|info|warning|error", "one of debug, info, warning, error")]


def _plain(field: str) -> property:
    """A read-only accessor for a SecretStr field: secrets stay out of repr(), logs and dumps, yet are one call away."""

    def get(self: BaseModel) -> str:
        return getattr(self, field).get_secret_value().strip()  # a credential never starts or ends with blanks

    return property(get, doc=f"The plain {field}, for the one place that sends it.")


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
            raise FieldErrors(*problems)
        return self

    def _problems(self) -> list[tuple[str, str]]:
        """Cross-field checks as ``(sub.key, message)``; they run once the model's own fields are valid."""
        return []


TlsVersion = Annotated[str, _matching(r"1\.[23]", 'one of "1.2", "1.3"')]


def _pairs(tls: Any) -> list[tuple[str, str]]:
    """cert_file and key_file come together."""
    if tls.cert_file and not tls.key_file:
        return [("key_file", "required with cert_file")]
    if tls.key_file and not tls.cert_file:
        return [("cert_file", "required with key_file")]
    return []


class ServerTLS(_Model):
    """A listener's TLS, with the OpenTelemetry Collector's names (configtls.ServerConfig); see ``otel_bridge.tls``."""

    cert_file: str = ""
    key_file: str = ""
    client_ca_file: str = ""  # mutual tls: clients must present a certificate this ca signed
    min_version: TlsVersion = "1.2"
    reload_interval: Duration = 0.0  # 0: never; else a renewed certificate is used by new connections

    def _problems(self) -> list[tuple[str, str]]:
        if not self.cert_file and not self.key_file:
            return [("cert_file", "required in a tls block (the listener's pem certificate)")]
        problems = _pairs(self)
        return problems


class ClientTLS(_Model):
    """An exporter's TLS (configtls.ClientConfig names); the server's certificate is verified by default."""

    ca_file: str = ""  # replaces the default roots
    cert_file: str = ""  # client certificate, for servers that require mutual tls
    key_file: str = ""
    insecure_skip_verify: bool = False  # logs a warning at start

    def _problems(self) -> list[tuple[str, str]]:
        problems = _pairs(self)
        if self.insecure_skip_verify and self.ca_file:
            problems.append(("insecure_skip_verify", "cannot be combined with ca_file (nothing would be verified)"))
        return problems


class GrpcProtocol(_Model):
    endpoint: Endpoint = "127.0.0.1:4317"
    max_recv_msg_size: Size = 16 * 1024**2
    tls: ServerTLS | None = None

    def _problems(self) -> list[tuple[str, str]]:
        if self.tls is not None and self.tls.min_version != "1.2":
            return [("tls.min_version", 'grpc negotiates tls 1.2 or 1.3 and grpcio cannot refuse 1.2, expected "1.2"')]
        return []


def _http_not_null(value: Any) -> Any:
    if value is None:
        raise ValueError("cannot be disabled, the http api shares this listener")
    return value


class HttpProtocol(_Model):
    endpoint: Endpoint = "127.0.0.1:4318"
    max_request_body_size: Size = 16 * 1024**2
    tls: ServerTLS | None = None


class OtlpProtocols(_Model):
    grpc: GrpcProtocol | None = GrpcProtocol()  # null turns gRPC off
    http: Annotated[HttpProtocol, BeforeValidator(_http_not_null)] = HttpProtocol()


class OtlpAuth(_Model):
    bearer_token: SecretStr = SecretStr("")
    insecure_allow_plaintext_token: bool = False  # a trusted network: the token may cross it unencrypted

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
        """Decision 10: only loopback listens without a token (or mutual tls) and a token never crosses the network
        in clear; two listeners on one address cannot both bind."""
        listeners = {n: p for n, p in (("grpc", self.protocols.grpc), ("http", self.protocols.http)) if p is not None}
        endpoints = [p.endpoint for p in listeners.values()]
        exposed = {n: p for n, p in listeners.items() if not is_loopback(split_endpoint(p.endpoint)[0])}
        token, problems = self.auth.bearer_token_value, []
        raw_token = self.auth.bearer_token.get_secret_value()
        if raw_token and not raw_token.strip():
            return [("auth.bearer_token", "is only whitespace; set a real token or leave it empty")]
        unauthenticated = [p.endpoint for p in exposed.values() if not (p.tls and p.tls.client_ca_file)]
        if unauthenticated and not token:
            problems.append(
                (
                    "auth.bearer_token",
                    f"required when binding a non-loopback address ({', '.join(unauthenticated)}) "
                    "without mutual tls (tls.client_ca_file)",
                )
            )
        for name, p in exposed.items():
            if token and p.tls is None and not self.auth.insecure_allow_plaintext_token:
                problems.append(
                    (
                        f"protocols.{name}.tls",
                        f"required to receive the bearer token on a non-loopback address "
                        f"({p.endpoint}): configure tls (cert_file, key_file), or set "
                        "receivers.otlp.auth.insecure_allow_plaintext_token: true on a trusted network",
                    )
                )
        if len(endpoints) == 2 and split_endpoint(endpoints[0]) == split_endpoint(endpoints[1]):
            problems.append(("protocols.http.endpoint", f"same address as protocols.grpc.endpoint ({endpoints[0]})"))
        return problems


def _flow_list(value: Any) -> Any:
    """``SKILLFLAW_FLOWS`` arrives as one comma-separated string; a YAML list works too."""
    if isinstance(value, str):
        return [f.strip() for f in value.split(",") if f.strip()]
    return value


class SkillFlawReceiver(_Model):
    """Polls a SkillFlaw / Langflow monitor API (``/api/v1/monitor``); on when ``base_url`` is set."""

    base_url: Url = ""
    api_key: SecretStr = SecretStr("")  # sent as x-api-key
    flows: Annotated[list[str], BeforeValidator(_flow_list)] = []  # empty: every flow GET /api/v1/flows/ lists
    poll_interval: PositiveDuration = 10.0
    edit_window: Duration = 3600.0  # how far back messages are re-read so that an edit is seen

    api_key_value = _plain("api_key")


class Receivers(_Model):
    otlp: OtlpReceiver = OtlpReceiver()
    skillflaw: SkillFlawReceiver = SkillFlawReceiver()


class RunsProcessor(_Model):
    wait: Duration = 5.0
    max_wait: Duration = 30.0
    max_traces: int = Field(10_000, ge=1)
    max_bytes: Size = 256 * 1024**2  # encoded size of the spans held for open traces (memory, not only count)

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
    # Delivery ledger (issue 10): retry a failing batch this long, then dead-letter it; never drop it.
    max_elapsed: PositiveDuration = 3600.0
    initial_backoff: PositiveDuration = 0.5
    max_backoff: PositiveDuration = 30.0

    def _problems(self) -> list[tuple[str, str]]:
        bad = self.max_queue < self.max_batch
        return [("max_queue", f"must be at least max_batch ({self.max_batch}), got {self.max_queue}")] if bad else []


class ClickHouseBatch(Batch):
    """An insert costs chDB ~35 ms however small, and every part is merged again later: inserts of 4,000 rows
    cost 89 µs of CPU per span, of 20,000 rows 43 µs (rows of bench/otlp.py's span mix), hence 20,000 rows or 5 s."""

    max_batch: int = Field(20_000, ge=1)
    interval: PositiveDuration = 5.0
    max_queue: int = Field(200_000, ge=1)
    # Rows wait here as encoded lines of ~1 KB (a long message makes one much longer): bound what they weigh too,
    # so receivers answer "retry later" while ClickHouse is slow or away instead of holding 200,000 of them.
    max_queue_bytes: Size = 64 * 1024**2

    def _problems(self) -> list[tuple[str, str]]:
        bad = self.max_queue_bytes < 1
        return super()._problems() + (
            [("max_queue_bytes", f"must be positive, got {self.max_queue_bytes}")] if bad else []
        )


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
    dead_letter: str = ""  # empty: <data_dir>/dead-letters/clickhouse.jsonl
    tls: ClientTLS = ClientTLS()

    def _problems(self) -> list[tuple[str, str]]:
        problems = []
        if self.tls != ClientTLS() and not self.secure:
            problems.append(("tls", "requires secure: true (https to the server)"))
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


class _HttpExporter(_Model):
    url: Url = ""  # empty: exporter off
    batch: Batch = Batch()
    dead_letter: str = ""  # empty: <data_dir>/dead-letters/<exporter>.jsonl
    tls: ClientTLS = ClientTLS()

    def _problems(self) -> list[tuple[str, str]]:
        if self.tls != ClientTLS() and self.url.startswith("http://"):
            return [("tls", "requires an https url")]
        return []


class ObservatoryExporter(_HttpExporter):
    api_key: SecretStr = SecretStr("")

    api_key_value = _plain("api_key")


class FlightDeckExporter(_HttpExporter):
    token: SecretStr = SecretStr("")

    token_value = _plain("token")


class Exporters(_Model):
    clickhouse: ClickHouseExporter = ClickHouseExporter()
    observatory: ObservatoryExporter = ObservatoryExporter()
    flightdeck: FlightDeckExporter = FlightDeckExporter()


def _component(kind: str, section: type[_Model]) -> Callable[[Any], Any]:
    def check(value: Any) -> Any:
        if isinstance(value, str) and value not in section.model_fields:
            raise ValueError(f"unknown {kind} {show(value)}")
        return value

    return Annotated[str, BeforeValidator(check)]


ReceiverName = _component("receiver", Receivers)
ProcessorName = _component("processor", Processors)
ExporterName = _component("exporter", Exporters)


class Pipeline(_Model):
    receivers: Annotated[list[ReceiverName], Field(min_length=1)] = ["otlp", "skillflaw"]
    processors: list[ProcessorName] = ["runs", "observatory", "flightdeck", "redact"]
    exporters: Annotated[list[ExporterName], Field(min_length=1)] = ["clickhouse", "observatory", "flightdeck"]

    def _problems(self) -> list[tuple[str, str]]:
        repeats = {
            k: sorted({n for n in getattr(self, k) if getattr(self, k).count(n) > 1}) for k in Pipeline.model_fields
        }
        return [(k, f"lists {', '.join(map(show, names))} more than once") for k, names in repeats.items() if names]


class Pipelines(_Model):
    traces: Pipeline = Pipeline()


class Telemetry(_Model):
    log_level: LogLevel = "info"


class Service(_Model):
    pipelines: Pipelines = Pipelines()
    telemetry: Telemetry = Telemetry()
    # Processes running the stages (recognise, run assembly, conversion): 0 = one per core; 1 = all in the
    # serving process. Spans are routed to workers by trace id; the serving process owns ClickHouse.
    workers: Annotated[int, Field(ge=0, le=256)] = 0


class BridgeConfig(_Model):
    receivers: Receivers = Receivers()
    processors: Processors = Processors()
    exporters: Exporters = Exporters()
    service: Service = Service()

    def skillflaw_enabled(self) -> bool:
        """The SkillFlaw poller runs when the pipeline lists it and it has a base_url."""
        return "skillflaw" in self.service.pipelines.traces.receivers and bool(self.receivers.skillflaw.base_url)

    def enabled_exporters(self) -> list[str]:
        """The pipeline's exporters that will run: ClickHouse always, Observatory/FlightDeck once they have a url."""
        return [
            n for n in self.service.pipelines.traces.exporters if n == "clickhouse" or getattr(self.exporters, n).url
        ]


# ---------------------------------------------------------------- errors, expansion, loading


class ConfigError(ValueError):
    """Every problem in one config, one ``path.to.key: what was expected`` line each."""

    def __init__(self, errors: list[str], source: str = "<string>") -> None:
        self.errors, self.source = list(errors), source
        super().__init__(str(self))

    def __str__(self) -> str:
        return f"{self.source}:\n" + "\n".join(f"  {e}" for e in self.errors)


def parse_config(text: str, *, source: str = "<string>", environ: dict[str, str] | None = None) -> BridgeConfig:
    """Parse, expand (``environ``, default ``os.environ``) and validate a config text; ConfigError lists every problem."""
    try:
        data = yaml.load(text, Loader=StrictLoader)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f"line {mark.line + 1}, column {mark.column + 1}: " if mark else ""
        raise ConfigError([f"{where}{exc.problem or exc.context}"], source) from None
    except yaml.YAMLError as exc:
        raise ConfigError([f"invalid yaml: {exc}"], source) from None
    data = {} if data is None else data
    if not isinstance(data, dict):
        raise ConfigError([f"(root): expected a mapping of sections, got {show(data)}"], source)
    errors: list[str] = []
    data = expand_env(data, dict(os.environ) if environ is None else environ, errors)
    try:
        config = BridgeConfig.model_validate(data)
    except ValidationError as exc:
        bad_refs = {e.partition(": ")[0] for e in errors}  # a failed reference already explains its value
        errors += [line for line in error_lines(exc, data, BridgeConfig) if line.partition(": ")[0] not in bad_refs]
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
