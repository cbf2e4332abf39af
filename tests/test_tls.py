"""TLS and mutual TLS on both listeners of a real ``otel-bridge serve``, driven by the OTel SDK's own OTLP exporters
and httpx; certificates come from test CAs made here with trustme (nothing is committed)."""

from __future__ import annotations

import json
import os
import socket
import ssl
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import trustme
from bridge_server import Bridge, start_bridge, wait_until

from otel_bridge.synthetic import plan_runs

APPS = Path(__file__).parent / "apps"
TOKEN = "tls-test-token-not-secret"


@dataclass
class Pki:
    """A CA, a server certificate for 127.0.0.1 and a client certificate from it, and an unrelated CA."""

    dir: Path
    ca: trustme.CA
    other: trustme.CA

    def path(self, name: str) -> str:
        return str(self.dir / name)

    def write_server(self, ca: trustme.CA) -> None:
        """(Re)issue the server pair; each file is replaced in one step, as a certificate renewal tool does."""
        cert = ca.issue_cert("127.0.0.1", "localhost")
        chain = b"".join(p.bytes() for p in cert.cert_chain_pems)
        for name, blob in (("server.key", cert.private_key_pem.bytes()), ("server.pem", chain)):
            tmp = self.dir / (name + ".new")
            tmp.write_bytes(blob)
            os.replace(tmp, self.dir / name)

    @property
    def server_der(self) -> bytes:
        return ssl.PEM_cert_to_DER_cert(
            (self.dir / "server.pem").read_text().split("-----END CERTIFICATE-----")[0] + "-----END CERTIFICATE-----\n"
        )


@pytest.fixture
def pki(tmp_path: Path) -> Pki:
    d = tmp_path / "pki"
    d.mkdir()
    p = Pki(d, trustme.CA(), trustme.CA())
    p.ca.cert_pem.write_to_path(p.path("ca.pem"))
    p.other.cert_pem.write_to_path(p.path("other-ca.pem"))
    p.write_server(p.ca)
    client = p.ca.issue_cert("agent@example.com")
    client.private_key_pem.write_to_path(p.path("client.key"))
    client.cert_chain_pems[0].write_to_path(p.path("client.pem"))
    stranger = p.other.issue_cert("stranger@example.com")  # a client certificate from a CA the server does not trust
    stranger.private_key_pem.write_to_path(p.path("stranger.key"))
    stranger.cert_chain_pems[0].write_to_path(p.path("stranger.pem"))
    return p


def _config(pki: Pki, *, mutual: bool, reload: str = "0s") -> str:
    extra = f', client_ca_file: "{pki.path("ca.pem")}"' if mutual else ""
    tls = (
        f'{{cert_file: "{pki.path("server.pem")}", key_file: "{pki.path("server.key")}",'
        f" reload_interval: {reload}{extra}}}"
    )
    return f"""
receivers:
  otlp:
    protocols:
      grpc: {{endpoint: "${{env:OTEL_BRIDGE_GRPC_ENDPOINT}}", tls: {tls}}}
      http: {{endpoint: "${{env:OTEL_BRIDGE_HTTP_ENDPOINT}}", tls: {tls}}}
    auth: {{bearer_token: "${{env:OTEL_BRIDGE_TOKEN:-}}"}}
processors:
  runs: {{wait: 300ms, max_wait: 2s}}
exporters:
  clickhouse: {{data_dir: "${{env:OTEL_BRIDGE_DATA_DIR}}", batch: {{interval: 200ms}}}}
"""


def _start(tmp: Path, pki: Pki, config: str, env: dict[str, str] | None = None) -> Bridge:
    """``start_bridge`` and a readiness check over https (its own check speaks plaintext)."""
    bridge = start_bridge(tmp, env, config=config, wait=False)
    verify = ssl.create_default_context(cafile=pki.path("ca.pem"))
    verify.load_cert_chain(pki.path("client.pem"), pki.path("client.key"))

    def ready() -> bool:
        assert bridge.proc.poll() is None, bridge.log.read_text()
        try:
            return httpx.get(f"https://{bridge.http}/healthz", verify=verify, timeout=2).status_code in (
                200,
                401,
            )  # 401: a token is set
        except httpx.HTTPError:
            return False

    if not wait_until(ready, timeout=60, interval=0.1):
        bridge.stop()
        raise AssertionError(f"otel-bridge serve did not answer over https:\n{bridge.log.read_text()}")
    return bridge


def _sender(
    transport: str,
    endpoint: str,
    *,
    ca: str | None = None,
    client: tuple[str, str] | None = None,
    token: str | None = None,
    runs: int = 1,
    timeout: float = 10,
) -> subprocess.Popen:
    """The SDK's OTLP exporter in a subprocess (tests/apps/send_otlp.py); its exit code says if the export succeeded."""
    cmd = [
        sys.executable,
        str(APPS / "send_otlp.py"),
        transport,
        endpoint,
        "--runs",
        str(runs),
        "--timeout",
        str(timeout),
        "--no-logs",
    ]
    cmd += ["--ca-file", ca] if ca else []
    cmd += ["--cert-file", client[0], "--key-file", client[1]] if client else []
    cmd += ["--token", token] if token else []
    # requests lets REQUESTS_CA_BUNDLE / CURL_CA_BUNDLE override a session's verify (the SDK's certificate_file)
    env = {k: v for k, v in os.environ.items() if k not in ("REQUESTS_CA_BUNDLE", "CURL_CA_BUNDLE")}
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)


def _codes(*senders: subprocess.Popen) -> list[int]:
    """Exit codes of senders that ran side by side (the refused ones mostly wait out their retries)."""
    codes = []
    for p in senders:
        out, _ = p.communicate(timeout=90)
        print(f"$ {' '.join(p.args[2:4])} -> {p.returncode}\n{out[-3000:]}")  # shown when a test fails
        codes.append(p.returncode)
    return codes


def _send(transport: str, endpoint: str, **kwargs) -> int:  # noqa: ANN003
    return _codes(_sender(transport, endpoint, **kwargs))[0]


def _spans(runs: int) -> int:
    return sum(1 + len(r.calls) + len(r.tools) for r in plan_runs(runs, seed=11, agents=("sdk-agent",), error_rate=0.0))


def _cli(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "otel_bridge.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **env},
    )


def _served_der(port: str, pki: Pki, alpn: list[str] | None = None) -> bytes:
    """The certificate a new connection is handed (not verified here: only which certificate it is)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname, ctx.verify_mode = False, ssl.CERT_NONE
    ctx.load_cert_chain(pki.path("client.pem"), pki.path("client.key"))
    if alpn:
        ctx.set_alpn_protocols(alpn)
    host, _, p = port.rpartition(":")
    with socket.create_connection((host, int(p)), timeout=5) as raw, ctx.wrap_socket(raw) as tls:
        return tls.getpeercert(binary_form=True)


# ---------------------------------------------------------------------------------------------- TLS with a token


def test_tls_with_token_on_both_listeners(tmp_path: Path, pki: Pki) -> None:
    bridge = _start(tmp_path, pki, _config(pki, mutual=False), {"OTEL_BRIDGE_TOKEN": TOKEN})
    ca, other = pki.path("ca.pem"), pki.path("other-ca.pem")
    try:
        # accepted: the SDK's gRPC and HTTP exporters trusting the test CA, with the token
        assert _send("grpc", bridge.grpc, ca=ca, token=TOKEN, runs=2) == 0
        assert _send("http", bridge.http, ca=ca, token=TOKEN, runs=1) == 0
        # refused: plaintext, and a certificate from a CA the client does not trust
        assert _codes(
            _sender("grpc", bridge.grpc, token=TOKEN, timeout=3),
            _sender("http", bridge.http, token=TOKEN, timeout=3),
            _sender("grpc", bridge.grpc, ca=other, token=TOKEN, timeout=3),
            _sender("http", bridge.http, ca=other, token=TOKEN, timeout=3),
        ) == [1, 1, 1, 1]
        # the API on the same listener: httpx verifies against the CA; plaintext and the wrong CA fail
        auth = {"authorization": f"Bearer {TOKEN}"}
        with httpx.Client(
            base_url=f"https://{bridge.http}", verify=ssl.create_default_context(cafile=ca), headers=auth
        ) as c:
            assert wait_until(lambda: len(c.get("/api/run/", params={"limit": 1000}).json()) == _spans(2) + _spans(1))
            assert (
                c.get("/api/costs", headers={"authorization": "Bearer wrong"}).status_code == 401
            )  # the token still counts
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"http://{bridge.http}/healthz", headers=auth, timeout=5)
        with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
            httpx.get(f"https://{bridge.http}/healthz", verify=ssl.create_default_context(cafile=other), timeout=5)
        # CLI commands that ask the running server: --ca-file, or --config (the listener's own certificate is trusted)
        env = {
            "OTEL_BRIDGE_TOKEN": TOKEN,
            "OTEL_BRIDGE_DATA_DIR": str(bridge.data_dir),
            "OTEL_BRIDGE_HTTP_ENDPOINT": bridge.http,
            "OTEL_BRIDGE_GRPC_ENDPOINT": bridge.grpc,
        }  # what the config reads
        data = ["--data-dir", str(bridge.data_dir)]
        with_flag = _cli("runs", *data, "--ca-file", ca, "--json", "--limit", "1000", env=env)
        assert with_flag.returncode == 0, with_flag.stderr
        assert len(json.loads(with_flag.stdout)) == _spans(2) + _spans(1)
        with_config = _cli("costs", "--config", str(tmp_path / "bridge.yaml"), "--json", env=env)
        assert with_config.returncode == 0, with_config.stderr
        unverified = _cli("costs", *data, "--json", env=env)
        assert unverified.returncode == 2
        assert "CERTIFICATE_VERIFY_FAILED" in unverified.stderr and "--ca-file" in unverified.stderr
    finally:
        log = bridge.stop()
    assert TOKEN not in log and "Traceback" not in log, log
    assert "OTEL_EXPORTER_OTLP_ENDPOINT=https://" in log  # the start banner names the https endpoint


# ---------------------------------------------------------------------------------------------- mutual TLS, reload


def test_mutual_tls_without_token_and_certificate_reload(tmp_path: Path, pki: Pki) -> None:
    bridge = _start(tmp_path, pki, _config(pki, mutual=True, reload="100ms"))
    ca, client = pki.path("ca.pem"), (pki.path("client.pem"), pki.path("client.key"))
    stranger = (pki.path("stranger.pem"), pki.path("stranger.key"))
    try:
        assert _codes(
            _sender("grpc", bridge.grpc, ca=ca, client=client),
            _sender("http", bridge.http, ca=ca, client=client),
            _sender("grpc", bridge.grpc, ca=ca, timeout=3),  # no client certificate
            _sender("http", bridge.http, ca=ca, timeout=3),
            _sender("grpc", bridge.grpc, ca=ca, client=stranger, timeout=3),  # a client certificate from another CA
            _sender("http", bridge.http, ca=ca, client=stranger, timeout=3),
        ) == [0, 0, 1, 1, 1, 1]
        with_cert = ssl.create_default_context(cafile=ca)
        with_cert.load_cert_chain(*client)
        assert httpx.get(f"https://{bridge.http}/api/costs", verify=with_cert, timeout=5).status_code == 200
        with pytest.raises(httpx.HTTPError):
            httpx.get(f"https://{bridge.http}/api/costs", verify=ssl.create_default_context(cafile=ca), timeout=5)

        # Renewal: a certificate from another CA replaces the files; new connections get it without a restart.
        old = pki.server_der
        pki.other.cert_pem.write_to_path(pki.path("renewed-ca.pem"))
        pki.write_server(pki.other)
        new = pki.server_der
        assert new != old
        assert wait_until(lambda: _served_der(bridge.http, pki) == new, timeout=30, interval=0.1)
        assert wait_until(lambda: _served_der(bridge.grpc, pki, ["h2"]) == new, timeout=30, interval=0.1)
        renewed = pki.path("renewed-ca.pem")
        assert _codes(
            _sender("grpc", bridge.grpc, ca=renewed, client=client),
            _sender("http", bridge.http, ca=renewed, client=client),
            _sender("grpc", bridge.grpc, ca=ca, client=client, timeout=3),  # the old CA no longer matches
        ) == [0, 0, 1]
        assert bridge.proc.poll() is None
    finally:
        log = bridge.stop()
    assert "reloaded the certificate" in log and "Traceback" not in log, log


# ---------------------------------------------------------------------------------------------- start-up rules


def test_serve_refuses_a_token_in_clear_and_names_both_ways_out(tmp_path: Path) -> None:
    exposed = start_bridge(
        tmp_path / "clear", {"OTEL_BRIDGE_HTTP_ENDPOINT": "0.0.0.0:4999", "OTEL_BRIDGE_TOKEN": TOKEN}, wait=False
    )
    assert exposed.proc.wait(60) == 1
    log = exposed.log.read_text()
    assert (
        "receivers.otlp.protocols.http.tls: required to receive the bearer token on a non-loopback address (0.0.0.0:4999)"
        in log
    )
    assert "configure tls (cert_file, key_file)" in log and "insecure_allow_plaintext_token: true" in log
    assert TOKEN not in log


def test_serve_refuses_an_unreadable_certificate(tmp_path: Path, pki: Pki) -> None:
    config = _config(pki, mutual=False).replace(pki.path("server.pem"), pki.path("missing.pem"), 1)
    bridge = start_bridge(tmp_path, config=config, wait=False)
    assert bridge.proc.wait(60) == 1
    assert (
        f'receivers.otlp.protocols.grpc.tls.cert_file: cannot read "{pki.path("missing.pem")}": no such file or directory'
        in bridge.log.read_text()
    )
