"""Outgoing TLS: the Observatory, FlightDeck and ClickHouse-server exporters verify the server's certificate by
default, take ``ca_file`` / ``cert_file`` + ``key_file`` / ``insecure_skip_verify``, and refuse a certificate from a
CA they were not told to trust. The far ends are HTTPS servers on 127.0.0.1 with certificates from test CAs."""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import orjson
import pytest
import trustme

from otel_bridge.analytics.store import Store, StoreConfig, StoreError
from otel_bridge.config import ClientTLS, parse_config
from otel_bridge.exporters.batch import RetryableError
from otel_bridge.exporters.flightdeck import FlightDeckSender
from otel_bridge.exporters.observatory import ObservatorySender
from otel_bridge.pipeline import pipeline_from_config, store_config
from otel_bridge.tls import clickhouse_options, client_context

Answer = Callable[[str, dict[str, str], bytes], tuple[int, dict[str, str], bytes]]


@dataclass
class Seen:
    path: str
    headers: dict[str, str]
    body: bytes
    client_cert: tuple = ()  # the client certificate's subjectAltName, when one was presented


@dataclass
class TlsSink:
    """An HTTPS server: records each request, answers with ``answer``; ``client_ca`` makes it require mutual TLS."""

    answer: Answer
    server_cert: trustme.LeafCert
    client_ca: trustme.CA | None = None
    seen: list[Seen] = field(default_factory=list)

    def __post_init__(self) -> None:
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.server_cert.configure_cert(ctx)
        if self.client_ca is not None:
            self.client_ca.configure_trust(ctx)
            ctx.verify_mode = ssl.CERT_REQUIRED
        sink = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("content-length") or 0))
                peer = self.connection.getpeercert() or {}
                sink.seen.append(
                    Seen(
                        self.path, {k.lower(): v for k, v in self.headers.items()}, body, peer.get("subjectAltName", ())
                    )
                )
                status, headers, payload = sink.answer(self.path, dict(self.headers), body)
                self.send_response(status)
                for k, v in {**headers, "content-length": str(len(payload))}.items():
                    self.send_header(k, v)
                self.end_headers()
                self.wfile.write(payload)

            do_GET = do_POST  # noqa: N815

            def log_message(self, *args: object) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.server.socket = ctx.wrap_socket(self.server.socket, server_side=True)  # the handshake runs in accept()
        threading.Thread(target=self.server.serve_forever, args=(0.05,), daemon=True).start()

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.server.server_address[1]}"

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _events_answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    """Observatory answers 200; FlightDeck answers with the number of runs it inserted."""
    n = len(orjson.loads(body)["events"])
    return (
        200,
        {"content-type": "application/json"},
        orjson.dumps({"inserted": n} if path == "/v1/events" else {"ok": True}),
    )


def _clickhouse_answer(path: str, headers: dict[str, str], body: bytes) -> tuple[int, dict[str, str], bytes]:
    """What a ClickHouse server says to a login it does not accept (HTTP interface, code 516)."""
    text = (
        b"Code: 516. DB::Exception: default: Authentication failed: password is incorrect, or there is no user with "
        b"such name. (AUTHENTICATION_FAILED) (version 24.8.4.13 (official build))\n"
    )
    return 403, {"content-type": "text/plain; charset=UTF-8", "X-ClickHouse-Exception-Code": "516"}, text


@dataclass
class Pki:
    dir: Path
    ca: trustme.CA
    other: trustme.CA

    def path(self, name: str) -> str:
        return str(self.dir / name)


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    p = Pki(tmp_path, trustme.CA(), trustme.CA())
    p.ca.cert_pem.write_to_path(p.path("ca.pem"))
    p.other.cert_pem.write_to_path(p.path("other-ca.pem"))
    client = p.ca.issue_cert("bridge@example.com")
    client.private_key_pem.write_to_path(p.path("client.key"))
    client.cert_chain_pems[0].write_to_path(p.path("client.pem"))
    return p


@pytest.fixture
def sinks(pki: Pki) -> Iterator[Callable[..., TlsSink]]:
    made: list[TlsSink] = []

    def make(answer: Answer, *, mutual: bool = False) -> TlsSink:
        made.append(TlsSink(answer, pki.ca.issue_cert("127.0.0.1"), pki.ca if mutual else None))
        return made[-1]

    yield make
    for s in made:
        s.close()


SENDERS = {
    "observatory": lambda url, verify: ObservatorySender(url, "obs-key-not-secret", verify=verify),
    "flightdeck": lambda url, verify: FlightDeckSender(url, "fd-token-not-secret", verify=verify),
}
EVENT = {
    "name": "saved",
    "type": "custom",
    "run_id": "00000000-0000-4000-8000-000000000001",
    "timestamp": "2026-05-29T08:42:11.123Z",
}


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_http_exporters_verify_by_default_and_refuse_an_unknown_ca(name: str, pki: Pki, sinks, caplog) -> None:
    sink = sinks(_events_answer)
    make = SENDERS[name]
    for verify in (True, client_context(ClientTLS(ca_file=pki.path("other-ca.pem")), "t")):  # default roots; another CA
        with pytest.raises(RetryableError, match="CERTIFICATE_VERIFY_FAILED"):
            make(sink.url, verify).send([EVENT])
    assert sink.seen == []  # nothing, credentials included, reached a server that could not prove who it is

    make(sink.url, client_context(ClientTLS(ca_file=pki.path("ca.pem")), "t")).send([EVENT])
    assert len(sink.seen) == 1 and orjson.loads(sink.seen[0].body) == {"events": [EVENT]}
    assert sink.seen[0].headers["authorization"].startswith("Bearer ")

    caplog.set_level(logging.WARNING, "otel_bridge.tls")
    make(sink.url, client_context(ClientTLS(insecure_skip_verify=True), f"exporters.{name}.tls")).send([EVENT])
    assert len(sink.seen) == 2
    assert f"exporters.{name}.tls.insecure_skip_verify: the server's certificate is not verified" in caplog.text


@pytest.mark.parametrize("name", sorted(SENDERS))
def test_http_exporters_present_a_client_certificate(name: str, pki: Pki, sinks) -> None:
    sink = sinks(_events_answer, mutual=True)
    with pytest.raises(RetryableError):
        SENDERS[name](sink.url, client_context(ClientTLS(ca_file=pki.path("ca.pem")), "t")).send([EVENT])
    assert sink.seen == []
    tls = ClientTLS(ca_file=pki.path("ca.pem"), cert_file=pki.path("client.pem"), key_file=pki.path("client.key"))
    SENDERS[name](sink.url, client_context(tls, "t")).send([EVENT])
    assert [s.client_cert for s in sink.seen] == [(("email", "bridge@example.com"),)]


def test_config_tls_blocks_reach_the_senders(pki: Pki, sinks) -> None:
    """``exporters.<name>.tls`` from a config file, through ``pipeline_from_config``, to delivered batches."""
    observatory, flightdeck = sinks(_events_answer), sinks(_events_answer, mutual=True)
    cfg = parse_config(f"""
exporters:
  observatory: {{url: "{observatory.url}", api_key: k, tls: {{ca_file: "{pki.path("ca.pem")}"}}, batch: {{interval: 50ms}}}}
  flightdeck:
    url: "{flightdeck.url}"
    dead_letter: ""
    batch: {{interval: 50ms}}
    tls: {{ca_file: "{pki.path("ca.pem")}", cert_file: "{pki.path("client.pem")}", key_file: "{pki.path("client.key")}"}}
service: {{pipelines: {{traces: {{exporters: [observatory, flightdeck]}}}}}}
""")
    pipeline = pipeline_from_config(cfg)
    try:
        for name in ("observatory", "flightdeck"):
            assert pipeline.exporters[name].offer_many([EVENT]) == 1
        assert pipeline.force_flush(10)
    finally:
        pipeline.shutdown(10)
    assert len(observatory.seen) == 1 and len(flightdeck.seen) == 1
    assert flightdeck.seen[0].client_cert == (("email", "bridge@example.com"),)


# ---------------------------------------------------------------------------------------------- ClickHouse server


def _clickhouse_cfg(sink: TlsSink, tls: str, password: str = "ch-password-not-secret") -> StoreConfig:
    """``exporters.clickhouse`` pointing at the sink, as ``serve`` maps it (``pipeline.store_config``)."""
    port = sink.url.rsplit(":", 1)[1]
    cfg = parse_config(
        f"exporters: {{clickhouse: {{host: 127.0.0.1, port: {port}, secure: true, password: '{password}', tls: {tls}}}}}"
    )
    return store_config(cfg)


def test_clickhouse_settings_map_to_clickhouse_connect(pki: Pki) -> None:
    tls = ClientTLS(ca_file=pki.path("ca.pem"), cert_file=pki.path("client.pem"), key_file=pki.path("client.key"))
    assert clickhouse_options(tls, "t", password=True) == {
        "verify": True, "ca_cert": pki.path("ca.pem"), "client_cert": pki.path("client.pem"),
        "client_cert_key": pki.path("client.key"), "tls_mode": "strict"}  # fmt: skip
    assert clickhouse_options(tls, "t", password=False)["tls_mode"] == "mutual"  # the certificate is the login
    assert clickhouse_options(ClientTLS(insecure_skip_verify=True), "t", password=True) == {"verify": False}
    assert clickhouse_options(ClientTLS(), "t", password=True) == {}  # clickhouse-connect's default: verify
    with pytest.raises(ValueError, match=r'^exporters.clickhouse.tls.ca_file: cannot read ".*nope.pem": no such file'):
        clickhouse_options(ClientTLS(ca_file=pki.path("nope.pem")), "exporters.clickhouse.tls", password=False)


@pytest.mark.filterwarnings("ignore::urllib3.exceptions.InsecureRequestWarning")  # the point of the last case
def test_clickhouse_server_certificate_is_verified(pki: Pki, sinks, caplog) -> None:
    sink = sinks(_clickhouse_answer)
    for tls in ("{}", f"{{ca_file: '{pki.path('other-ca.pem')}'}}"):  # default roots; another CA
        with pytest.raises(StoreError, match="CERTIFICATE_VERIFY_FAILED"):
            Store.open(_clickhouse_cfg(sink, tls))
    assert sink.seen == []  # the password never left

    # The right CA: the handshake succeeds and the server's own answer (a refused login) comes back.
    with pytest.raises(StoreError, match="Authentication failed"):
        Store.open(_clickhouse_cfg(sink, f"{{ca_file: '{pki.path('ca.pem')}'}}"))
    assert sink.seen and sink.seen[0].headers["authorization"].startswith("Basic ")

    caplog.set_level(logging.WARNING, "otel_bridge.tls")
    with pytest.raises(StoreError, match="Authentication failed"):
        Store.open(_clickhouse_cfg(sink, "{insecure_skip_verify: true}"))
    assert "exporters.clickhouse.tls.insecure_skip_verify" in caplog.text


def test_clickhouse_client_certificate(pki: Pki, sinks) -> None:
    sink = sinks(_clickhouse_answer, mutual=True)
    with pytest.raises(StoreError):
        Store.open(_clickhouse_cfg(sink, f"{{ca_file: '{pki.path('ca.pem')}'}}"))  # no client certificate
    assert sink.seen == []
    pair = (
        f"ca_file: '{pki.path('ca.pem')}', cert_file: '{pki.path('client.pem')}', key_file: '{pki.path('client.key')}'"
    )
    with pytest.raises(StoreError, match="Authentication failed"):
        Store.open(
            _clickhouse_cfg(sink, f"{{{pair}}}")
        )  # with a password: the certificate secures, the password logs in
    with pytest.raises(StoreError, match="Authentication failed"):
        Store.open(_clickhouse_cfg(sink, f"{{{pair}}}", password=""))  # without: ClickHouse's certificate login
    strict, mutual = sink.seen[0], sink.seen[-1]
    assert strict.client_cert == mutual.client_cert == (("email", "bridge@example.com"),)
    assert strict.headers["authorization"].startswith("Basic ")
    assert mutual.headers["x-clickhouse-ssl-certificate-auth"] == "on" and "authorization" not in mutual.headers
