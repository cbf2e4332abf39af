"""TLS for every listener and every outgoing connection, with the OpenTelemetry Collector's setting names.

Server side (``receivers.otlp.protocols.{grpc,http}.tls``): ``cert_file``, ``key_file``, ``client_ca_file`` (mutual
TLS), ``min_version`` and ``reload_interval`` (configtls: https://github.com/open-telemetry/opentelemetry-collector/
tree/main/config/configtls). A renewed certificate is picked up by new connections without a restart:

- gRPC: ``grpc.dynamic_ssl_server_credentials``, whose fetcher grpc core calls before every handshake;
- HTTP (uvicorn): one ``ssl.SSLContext`` whose SNI callback — OpenSSL calls it on every ClientHello, with or
  without a server name — hands the connection the newest loaded context.

Files are re-read at most once per ``reload_interval`` and only when their size or mtime changed; a renewal that
fails to load (a half-written file) is logged and the previous certificate stays in use.

Client side (exporters, CLI): ``ca_file``, ``cert_file``/``key_file`` and ``insecure_skip_verify``. Certificates
are verified by default. This module imports nothing of the project, so receivers, exporters and the CLI share it.
"""

from __future__ import annotations

import logging
import os
import ssl
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

log = logging.getLogger(__name__)

VERSIONS = {"1.2": ssl.TLSVersion.TLSv1_2, "1.3": ssl.TLSVersion.TLSv1_3}


class ServerTLSSettings(Protocol):
    """What a listener's ``tls`` block holds (``config.ServerTLS`` is one)."""

    cert_file: str
    key_file: str
    client_ca_file: str
    min_version: str
    reload_interval: float


class ClientTLSSettings(Protocol):
    """What an exporter's ``tls`` block holds (``config.ClientTLS`` is one)."""

    ca_file: str
    cert_file: str
    key_file: str
    insecure_skip_verify: bool


def enabled(tls: Any) -> bool:
    """A listener serves TLS when its block names a certificate."""
    return tls is not None and bool(getattr(tls, "cert_file", ""))


def mutual(tls: Any) -> bool:
    """Mutual TLS: clients must present a certificate signed by ``client_ca_file``."""
    return enabled(tls) and bool(tls.client_ca_file)


# ---------------------------------------------------------------------------------------------- loading files


def _read(path: str, key: str) -> bytes:
    try:
        with open(os.path.expanduser(path), "rb") as f:
            return f.read()
    except OSError as exc:
        reason = (exc.strerror or str(exc)).lower()
        raise ValueError(f'{key}: cannot read "{path}": {reason}') from None


def _pem(path: str, key: str, marker: bytes, what: str) -> bytes:
    data = _read(path, key)
    if b"-----BEGIN " not in data or marker not in data:
        raise ValueError(f'{key}: "{path}" is not a pem {what}')
    return data


def _load_chain(ctx: ssl.SSLContext, cert_file: str, key_file: str, key: str) -> None:
    """``load_cert_chain`` with messages that say which file is wrong."""
    _pem(cert_file, f"{key}.cert_file", b"CERTIFICATE-----", "certificate")
    _pem(key_file, f"{key}.key_file", b"PRIVATE KEY-----", "private key")
    try:
        ctx.load_cert_chain(os.path.expanduser(cert_file), os.path.expanduser(key_file))
    except ssl.SSLError as exc:
        if "KEY_VALUES_MISMATCH" in str(exc):
            raise ValueError(f'{key}.key_file: "{key_file}" does not match the certificate in cert_file') from None
        raise ValueError(
            f"{key}.cert_file: cannot load the certificate and key: {(exc.reason or str(exc)).lower()}"
        ) from None


def _load_ca(ctx: ssl.SSLContext, path: str, key: str) -> None:
    data = _pem(path, key, b"CERTIFICATE-----", "ca certificate")
    try:
        ctx.load_verify_locations(cadata=data.decode("ascii", "replace"))
    except (ssl.SSLError, ValueError) as exc:
        raise ValueError(f'{key}: "{path}" is not a pem ca certificate ({str(exc).lower()})') from None


def _signature(paths: list[str]) -> tuple:
    """What changes when a file is renewed; an unreadable file counts as a change (the reload then reports it)."""
    out = []
    for path in paths:
        try:
            st = os.stat(os.path.expanduser(path))
            out.append((st.st_ino, st.st_size, st.st_mtime_ns))
        except OSError:
            out.append(None)
    return tuple(out)


def _files(tls: ServerTLSSettings) -> list[str]:
    return [p for p in (tls.cert_file, tls.key_file, tls.client_ca_file) if p]


# ---------------------------------------------------------------------------------------------- server: HTTP


def server_context(tls: ServerTLSSettings, key: str) -> ssl.SSLContext:
    """A server context from the files as they are now; ``ValueError`` names the bad key."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = VERSIONS[tls.min_version]
    ctx.options |= ssl.OP_NO_RENEGOTIATION
    _load_chain(ctx, tls.cert_file, tls.key_file, key)
    if tls.client_ca_file:
        _load_ca(ctx, tls.client_ca_file, f"{key}.client_ca_file")
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx


class _Reloader:
    """Reload when ``reload_interval`` has passed and a file changed; failures keep the last good result."""

    def __init__(
        self, tls: ServerTLSSettings, key: str, load: Callable[[], Any], clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.tls, self.key, self._load, self._clock = tls, key, load, clock
        self._lock = threading.Lock()
        self._signature = _signature(_files(tls))
        self.current = load()  # start-up: an error here refuses to start
        self._checked = clock()
        self.reloads = 0

    def poll(self) -> bool:
        """True when a new result was loaded."""
        interval = self.tls.reload_interval
        if not interval or self._clock() - self._checked < interval:
            return False
        with self._lock:
            self._checked = self._clock()
            signature = _signature(_files(self.tls))
            if signature == self._signature:
                return False
            try:
                self.current = self._load()
            except ValueError as exc:
                log.warning(
                    "%s: the renewed certificate did not load, still serving the previous one: %s", self.key, exc
                )
                return False
            self._signature = signature
            self.reloads += 1
            log.info("%s: reloaded the certificate from %s", self.key, self.tls.cert_file)
            return True


def reloading_server_context(tls: ServerTLSSettings, key: str) -> ssl.SSLContext:
    """The context uvicorn listens with; with ``reload_interval`` each new handshake gets the newest certificate.

    The front context keeps the verify mode and minimum version (identical in every reload); switching
    ``SSLObject.context`` in the SNI callback swaps the certificate, key and trust store for that connection.
    """
    front = server_context(tls, key)
    if tls.reload_interval:
        reloader = _Reloader(tls, key, lambda: server_context(tls, key))

        def pick(sslobj: ssl.SSLObject, server_name: str | None, ctx: ssl.SSLContext) -> None:
            reloader.poll()
            if reloader.reloads:
                sslobj.context = reloader.current

        front.sni_callback = pick
    return front


def uvicorn_ssl(tls: ServerTLSSettings | None, key: str) -> dict[str, Any]:
    """``uvicorn.Config`` keyword arguments for a listener's ``tls`` block (none when TLS is off)."""
    if not enabled(tls):
        return {}
    context = reloading_server_context(tls, key)  # built now: a bad file refuses to start before binding
    return {"ssl_context_factory": lambda config, default: context}


# ---------------------------------------------------------------------------------------------- server: gRPC


def grpc_server_credentials(tls: ServerTLSSettings | None, key: str) -> Any:
    """``grpc.ServerCredentials`` for ``add_secure_port``, or None (plaintext) when TLS is off.

    grpc core negotiates TLS 1.2 or 1.3 and grpcio offers no way to raise that floor, which is why the config
    refuses ``min_version: "1.3"`` on the gRPC listener.
    """
    if not enabled(tls):
        return None
    import grpc

    def load() -> Any:
        server_context(tls, key)  # the same checks and messages as HTTP; grpc core's own errors say little
        chain = _read(tls.cert_file, f"{key}.cert_file")
        private = _read(tls.key_file, f"{key}.key_file")
        roots = _read(tls.client_ca_file, f"{key}.client_ca_file") if tls.client_ca_file else None
        return grpc.ssl_server_certificate_configuration([(private, chain)], root_certificates=roots)

    reloader = _Reloader(tls, key, load)

    def fetch() -> Any:
        return reloader.current if reloader.poll() else None  # None: keep the current certificate

    return grpc.dynamic_ssl_server_credentials(reloader.current, fetch, require_client_authentication=mutual(tls))


# ---------------------------------------------------------------------------------------------- clients


def _client_configured(tls: Any) -> bool:
    return tls is not None and bool(tls.ca_file or tls.cert_file or tls.key_file or tls.insecure_skip_verify)


def client_context(tls: ClientTLSSettings | None, key: str) -> ssl.SSLContext | bool:
    """What ``httpx.Client(verify=...)`` takes: True (verify against the default roots) unless the block sets
    something. ``ca_file`` replaces the default roots, as in the collector; ``insecure_skip_verify`` warns."""
    if not _client_configured(tls):
        return True
    if tls.insecure_skip_verify:
        log.warning(
            "%s.insecure_skip_verify: the server's certificate is not verified; anyone on the path can "
            "read and change this traffic, credentials included",
            key,
        )
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
    elif tls.ca_file:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # verifies and checks the host name by default
        _load_ca(ctx, tls.ca_file, f"{key}.ca_file")
        ctx.verify_flags |= (
            ssl.VERIFY_X509_PARTIAL_CHAIN
        )  # an intermediate or the server's own certificate may be the anchor
    else:
        import certifi  # httpx's own default roots, so adding a client certificate changes nothing else

        ctx = ssl.create_default_context(cafile=certifi.where())
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    if tls.cert_file:
        _load_chain(ctx, tls.cert_file, tls.key_file, key)
    return ctx


def clickhouse_options(tls: ClientTLSSettings | None, key: str, *, password: bool) -> dict[str, Any]:
    """clickhouse-connect ``get_client`` arguments for ``exporters.clickhouse.tls``.

    ``verify`` / ``ca_cert`` / ``client_cert`` / ``client_cert_key`` map one to one. With a client certificate,
    ``tls_mode`` is ``"strict"`` when a password is set (the certificate secures the connection, the password
    still authenticates) and ``"mutual"`` otherwise (ClickHouse authenticates the user by the certificate).
    """
    if not _client_configured(tls):
        return {}
    for name in ("ca_file", "cert_file", "key_file"):
        if getattr(tls, name):
            _read(getattr(tls, name), f"{key}.{name}")  # a missing file is a start-up error naming the key
    if tls.insecure_skip_verify:
        log.warning("%s.insecure_skip_verify: the clickhouse server's certificate is not verified", key)
    options: dict[str, Any] = {"verify": not tls.insecure_skip_verify}
    if tls.ca_file:
        options["ca_cert"] = os.path.expanduser(tls.ca_file)
    if tls.cert_file:
        options["client_cert"] = os.path.expanduser(tls.cert_file)
        options["client_cert_key"] = os.path.expanduser(tls.key_file)
        options["tls_mode"] = "strict" if password else "mutual"
    return options
