"""What both OTLP receivers share: settings, the trust boundary, auth, body limits, counters and the export step.

The gRPC and HTTP transports only translate between their wire and this module, so what is accepted, refused
and counted is decided once (https://opentelemetry.io/docs/specs/otlp/, DESIGN decisions 6, 7 and 10).
"""

from __future__ import annotations

import hmac
import ipaddress
import logging
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

from otel_bridge import tls as tlsmod
from otel_bridge.receivers.spool import SpoolFull
from otel_bridge.spans import (
    Decoded,
    DecodeError,
    logs_from_otlp_json,
    logs_from_otlp_proto,
    spans_from_otlp_json,
    spans_from_otlp_proto,
)

log = logging.getLogger(__name__)

MiB = 1 << 20
TRANSPORTS = ("grpc", "http")
SIGNALS = ("traces", "logs")

# Refusal reason → (HTTP status, gRPC status code number). One table so both transports answer alike.
REASONS: dict[str, tuple[int, int]] = {
    "invalid": (400, 3),  # INVALID_ARGUMENT
    "unauthenticated": (401, 16),  # UNAUTHENTICATED
    "too_large": (413, 8),  # RESOURCE_EXHAUSTED
    "unsupported": (415, 3),
    "internal": (500, 13),  # INTERNAL
    "unavailable": (503, 14),  # UNAVAILABLE: the only retryable one (OTLP "Failures")
}


ROOM_WAIT = 1.0  # seconds a request waits for the pipeline to make room before it is answered "retry later"
_ROOM_POLL = 0.02


def wait_for_room(has_room: Callable[[int], bool], n: int, wait: float = ROOM_WAIT) -> bool:
    """Backpressure without idle gaps: a request that finds the pipeline full waits up to ``wait`` for room, as a
    blocking queue would, and only then is refused. Refused at once, clients back off (OTLP exporters: 50 ms
    doubling to seconds) while the backlog clears in a fraction of that — bench/otlp.py's load generator was
    told to retry 42 times in 118 requests and the service idled a third of the time."""
    if has_room(n):
        return True
    deadline = time.monotonic() + wait
    while time.monotonic() < deadline:
        time.sleep(_ROOM_POLL)
        if has_room(n):
            return True
    return False


class SpanConsumer(Protocol):
    """What a receiver hands its data to (``Pipeline`` is one); ``has_room`` is the backpressure signal.

    A consumer may also have ``persist(signal, fmt, body) -> pos`` — a write-ahead spool — called before a request
    is accepted, and ``release(pos)`` called once the request was handed over with that position. A consumer
    with ``route(signal, fmt, body) -> (accepted, rejected, message)`` (serve's worker pool) takes the whole
    undecoded request instead. ``submit_spans`` returns the messages of spans it refused (reported in OTLP ``partial_success``)."""

    def submit_spans(self, spans: list[Any], pos: int | None = None) -> list[str]: ...

    def submit_logs(self, logs: list[Any], pos: int | None = None) -> None: ...

    def has_room(self, n: int) -> bool: ...


@dataclass(frozen=True)
class ReceiverSettings:
    grpc_endpoint: str = "127.0.0.1:4317"
    http_endpoint: str = "127.0.0.1:4318"
    max_recv_msg_size: int = 16 * MiB  # gRPC, after decompression (grpc core checks both)
    max_request_body_size: int = 16 * MiB  # HTTP, checked on the wire body and again after decompression
    bearer_token: str | None = field(default=None, repr=False)  # never printed, never logged
    retry_after: float = 1.0  # seconds a client is told to wait when the pipeline is full
    grpc_max_workers: int = 8
    grpc_tls: Any = None  # a listener's tls block (``otel_bridge.tls.ServerTLSSettings``); None: plaintext
    http_tls: Any = None
    allow_plaintext_token: bool = False  # receivers.otlp.auth.insecure_allow_plaintext_token


class Refused(Exception):
    """A request refused as a whole; ``reason`` (a key of ``REASONS``) picks the status on each transport."""

    def __init__(self, reason: str, message: str, received: int = 0) -> None:
        super().__init__(message)
        self.reason, self.message, self.received = reason, message, received

    @property
    def http_status(self) -> int:
        return REASONS[self.reason][0]

    @property
    def grpc_code(self) -> int:
        return REASONS[self.reason][1]


# ---------------------------------------------------------------------------------------------- trust boundary


def _host_of(endpoint: str) -> str:
    ep = endpoint.strip().split("://", 1)[-1]
    if ep.startswith("["):
        return ep[1 : ep.find("]")] if "]" in ep else ep[1:]
    if ep.count(":") > 1:  # a bare IPv6 address, no port
        return ep
    return ep.rpartition(":")[0] if ":" in ep else ep


def is_loopback(host: str) -> bool:
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # any other name may resolve anywhere; an empty host means every interface


def check_bind(
    endpoint: str, token: str | None, *, key: str = "endpoint", tls: Any = None, allow_plaintext_token: bool = False
) -> None:
    """Loopback by default; any other address needs a bearer token or mutual TLS (FlightDeck's trust boundary),
    and a token only crosses the network inside TLS unless the operator says the network is trusted."""
    if is_loopback(_host_of(endpoint)):
        return
    if not token and not tlsmod.mutual(tls):
        raise ValueError(
            f"{key}: binding {endpoint!r} (not loopback) requires a bearer token or mutual tls (tls.client_ca_file)"
        )
    if token and not tlsmod.enabled(tls):
        if not allow_plaintext_token:
            raise ValueError(
                f"{key}: binding {endpoint!r} (not loopback) would receive the bearer token in clear: configure tls "
                "(cert_file, key_file), or set receivers.otlp.auth.insecure_allow_plaintext_token: true on a trusted network"
            )
        log.warning(
            "%s: %s serves plaintext and the bearer token crosses the network unencrypted "
            "(receivers.otlp.auth.insecure_allow_plaintext_token is true)",
            key,
            endpoint,
        )


def check_listeners(settings: ReceiverSettings) -> None:
    """``serve``'s start-up check of both listeners: the bind rules, then each tls block's files (so a bad
    certificate is refused, naming its key, before anything is opened or bound)."""
    listeners = [("http", settings.http_endpoint, settings.http_tls)]
    if settings.grpc_endpoint:
        listeners.append(("grpc", settings.grpc_endpoint, settings.grpc_tls))
    for name, endpoint, tls in listeners:
        check_bind(
            endpoint,
            settings.bearer_token,
            key=f"receivers.otlp.protocols.{name}.endpoint",
            tls=tls,
            allow_plaintext_token=settings.allow_plaintext_token,
        )
    for name, _, tls in listeners:
        if tlsmod.enabled(tls):
            tlsmod.server_context(tls, f"receivers.otlp.protocols.{name}.tls")


def authorized(header_value: str | None, token: str | None) -> bool:
    """``Authorization: Bearer <token>`` compared in constant time; everything passes when no token is set."""
    if not token:
        return True
    scheme, _, credentials = (header_value or "").strip().partition(" ")
    ok = hmac.compare_digest(credentials.strip().encode(), token.encode())
    return ok and scheme.lower() == "bearer"


# ---------------------------------------------------------------------------------------------- limits


_WBITS = {"gzip": 16 + zlib.MAX_WBITS, "x-gzip": 16 + zlib.MAX_WBITS, "deflate": zlib.MAX_WBITS}
SUPPORTED_ENCODINGS = ("gzip", "deflate", "identity")


def check_encoding(encoding: str | None) -> str:
    enc = (encoding or "identity").strip().lower()
    if enc not in _WBITS and enc not in ("", "identity"):
        raise Refused(
            "unsupported",
            f"content-encoding {encoding!r} is not supported, use one of {', '.join(SUPPORTED_ENCODINGS)}",
        )
    return enc


def decompress_capped(data: bytes, encoding: str | None, limit: int) -> bytes:
    """Inflate with at most ``limit + 1`` bytes ever allocated for the output, so a gzip bomb costs nothing."""
    enc = check_encoding(encoding)
    if enc in ("", "identity"):
        return data
    out = bytearray()
    d = zlib.decompressobj(_WBITS[enc])
    try:
        while data:
            out += d.decompress(data, limit + 1 - len(out))
            if len(out) > limit:
                raise Refused("too_large", f"body is larger than {limit} bytes after decompression")
            data = d.unconsumed_tail
            if d.eof and d.unused_data:  # concatenated gzip members (RFC 1952 §2.2)
                data, d = d.unused_data, zlib.decompressobj(_WBITS[enc])
    except zlib.error as exc:
        raise Refused("invalid", f"body is not valid {enc}: {exc}") from None
    if not d.eof:
        raise Refused("invalid", f"body is not valid {enc}: truncated stream")
    return bytes(out)


# ---------------------------------------------------------------------------------------------- counters


class ReceiverStats:
    """Counters per transport and signal, in items and in requests by outcome; thread-safe."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data = {
            (t, s): {"received": 0, "accepted": 0, "refused": 0, "requests": {}} for t in TRANSPORTS for s in SIGNALS
        }

    def record(
        self, transport: str, signal: str, outcome: str, *, received: int = 0, accepted: int = 0, refused: int = 0
    ) -> None:
        with self._lock:
            c = self._data.setdefault((transport, signal), {"received": 0, "accepted": 0, "refused": 0, "requests": {}})
            c["received"] += received
            c["accepted"] += accepted
            c["refused"] += refused
            c["requests"][outcome] = c["requests"].get(outcome, 0) + 1

    def refuse(self, transport: str, signal: str, refused: Refused) -> None:
        self.record(transport, signal, refused.reason, received=refused.received, refused=refused.received)

    def snapshot(self) -> dict[str, dict[str, dict[str, Any]]]:
        """``{"grpc": {"traces": {"received", "accepted", "refused", "requests": {outcome: n}}, ...}, "http": ...}``."""
        with self._lock:
            out: dict[str, dict[str, dict[str, Any]]] = {}
            for (t, s), c in self._data.items():
                out.setdefault(t, {})[s] = {**c, "requests": dict(c["requests"])}
            return out


# ---------------------------------------------------------------------------------------------- export


def _export(
    consumer: SpanConsumer, decoded: Decoded, submit: Callable[..., Any], persist: Callable[[], int] | None
) -> tuple[int, int, str | None]:
    items = decoded.items
    if items and not wait_for_room(consumer.has_room, len(items)):
        # Checked before accepting anything: a retryable refusal must not leave half a request behind.
        raise Refused("unavailable", "pipeline is full, retry later", received=len(items) + decoded.rejected)
    if not items:
        return 0, decoded.rejected, decoded.error
    pos = None
    if persist is not None:
        try:
            pos = persist()  # written ahead: once the client hears "accepted", a crash cannot lose it
        except SpoolFull as exc:
            raise Refused("unavailable", str(exc), received=len(items) + decoded.rejected) from None
    try:
        refused = submit(items, pos) if pos is not None else submit(items)
    finally:
        if pos is not None:
            consumer.release(pos)  # type: ignore[attr-defined]
    messages = [m for m in (refused if isinstance(refused, list) else ()) if m]
    rejected = decoded.rejected + len(messages)
    message = "; ".join(([decoded.error] if decoded.error else []) + summary(messages)) or None
    return len(items) - len(messages), rejected, message


def summary(messages: list[str], limit: int = 5) -> list[str]:
    """A few refusal messages, then how many more: partial_success carries one string."""
    return messages[:limit] + ([f"... and {len(messages) - limit} more"] if len(messages) > limit else [])


def export_traces(
    consumer: SpanConsumer, decoded: Decoded, persist: Callable[[], int] | None = None
) -> tuple[int, int, str | None]:
    """(accepted, rejected, message); raises ``Refused("unavailable")`` when the consumer has no room."""
    return _export(consumer, decoded, consumer.submit_spans, persist)


def export_logs(
    consumer: SpanConsumer, decoded: Decoded, persist: Callable[[], int] | None = None
) -> tuple[int, int, str | None]:
    return _export(consumer, decoded, consumer.submit_logs, persist)


_DECODERS = {
    ("traces", "proto"): spans_from_otlp_proto,
    ("traces", "json"): spans_from_otlp_json,
    ("logs", "proto"): logs_from_otlp_proto,
    ("logs", "json"): logs_from_otlp_json,
}


def decode(signal: str, body: bytes, fmt: str) -> Decoded:
    """``fmt`` is "proto" or "json"; an unreadable body is ``Refused("invalid")`` whatever the decoder raised."""
    try:
        return _DECODERS[signal, fmt](body)
    except DecodeError as exc:
        raise Refused("invalid", str(exc)) from None
    except Exception as exc:  # noqa: BLE001 - garbage must never reach the transport as a crash
        log.debug("undecodable %s %s body", signal, fmt, exc_info=True)
        raise Refused("invalid", f"body could not be decoded as OTLP {fmt}: {type(exc).__name__}") from None


def receive(
    consumer: SpanConsumer,
    stats: ReceiverStats,
    transport: str,
    signal: str,
    body: bytes,
    fmt: str,
    inflate: Callable[[bytes], bytes] | None = None,
) -> tuple[int, int, str | None]:
    """Inflate, decode, export and count one request; raises ``Refused`` (already counted) instead of answering."""
    try:
        raw = inflate(body) if inflate else body
        del body  # a refused body is freed with its request, not kept by a traceback (issue 10, memory)
        route = getattr(consumer, "route", None)  # serve's worker processes: split by trace id, decoded there
        if route is not None:
            accepted, rejected, message = route(signal, fmt, raw)
        else:
            decoded = decode(signal, raw, fmt)
            spool = getattr(consumer, "persist", None)  # a consumer with a write-ahead spool (serve)
            persist = (lambda: spool(signal, fmt, raw)) if spool is not None else None
            export = export_traces if signal == "traces" else export_logs
            accepted, rejected, message = export(consumer, decoded, persist)
    except Refused as r:
        stats.refuse(transport, signal, r)
        r.__traceback__ = None  # the frames above hold the body; the caller only needs reason and message
        raise r from None
    except Exception:  # noqa: BLE001 - a consumer bug answers 500 / INTERNAL, the server keeps running
        log.exception("otlp %s %s: consumer failed", transport, signal)
        r = Refused("internal", "internal error")
        stats.refuse(transport, signal, r)
        raise r from None
    stats.record(
        transport,
        signal,
        "partial" if rejected else "ok",
        received=accepted + rejected,
        accepted=accepted,
        refused=rejected,
    )
    return accepted, rejected, message
