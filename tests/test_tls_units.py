"""``otel_bridge.tls`` on its own: start-up messages that name the bad key, the reload rule, the bind rules."""

from __future__ import annotations

import logging
import ssl
from pathlib import Path

import pytest
import trustme

from otel_bridge import tls
from otel_bridge.config import ServerTLS
from otel_bridge.receivers.otlp import check_bind

KEY = "receivers.otlp.protocols.http.tls"


@pytest.fixture
def files(tmp_path: Path) -> dict[str, str]:
    ca, other = trustme.CA(), trustme.CA()
    out = {}
    for name, cert in (("a", ca.issue_cert("127.0.0.1")), ("b", other.issue_cert("127.0.0.1"))):
        cert.cert_chain_pems[0].write_to_path(tmp_path / f"{name}.pem")
        cert.private_key_pem.write_to_path(tmp_path / f"{name}.key")
        out[f"{name}.pem"], out[f"{name}.key"] = str(tmp_path / f"{name}.pem"), str(tmp_path / f"{name}.key")
    ca.cert_pem.write_to_path(tmp_path / "ca.pem")
    (tmp_path / "junk.pem").write_text("not a certificate\n")
    out["ca.pem"], out["junk.pem"], out["missing"] = (
        str(tmp_path / "ca.pem"),
        str(tmp_path / "junk.pem"),
        str(tmp_path / "missing.pem"),
    )
    return out


def test_server_context(files: dict[str, str]) -> None:
    ctx = tls.server_context(ServerTLS(cert_file=files["a.pem"], key_file=files["a.key"], min_version="1.3"), KEY)
    assert ctx.minimum_version == ssl.TLSVersion.TLSv1_3 and ctx.verify_mode == ssl.CERT_NONE
    mutual = tls.server_context(
        ServerTLS(cert_file=files["a.pem"], key_file=files["a.key"], client_ca_file=files["ca.pem"]), KEY
    )
    assert mutual.minimum_version == ssl.TLSVersion.TLSv1_2 and mutual.verify_mode == ssl.CERT_REQUIRED


@pytest.mark.parametrize(("cert", "key", "client_ca", "message"), [
    ("missing", "a.key", "", f'{KEY}.cert_file: cannot read "<missing>": no such file or directory'),
    ("junk.pem", "a.key", "", f'{KEY}.cert_file: "<junk.pem>" is not a pem certificate'),
    ("a.pem", "a.pem", "", f'{KEY}.key_file: "<a.pem>" is not a pem private key'),
    ("a.pem", "b.key", "", f'{KEY}.key_file: "<b.key>" does not match the certificate in cert_file'),
    ("a.pem", "a.key", "junk.pem", f'{KEY}.client_ca_file: "<junk.pem>" is not a pem ca certificate'),
])  # fmt: skip
def test_server_context_errors_name_the_key(
    files: dict[str, str], cert: str, key: str, client_ca: str, message: str
) -> None:
    block = ServerTLS(cert_file=files[cert], key_file=files[key], client_ca_file=files[client_ca] if client_ca else "")
    with pytest.raises(ValueError) as info:
        tls.server_context(block, KEY)
    for name, path in files.items():
        message = message.replace(f"<{name}>", path)
    assert str(info.value) == message


def test_reload_only_after_the_interval_and_keeps_the_last_good(files: dict[str, str], tmp_path: Path, caplog) -> None:
    cert, key = tmp_path / "live.pem", tmp_path / "live.key"
    cert.write_bytes(Path(files["a.pem"]).read_bytes())
    key.write_bytes(Path(files["a.key"]).read_bytes())
    now = [0.0]
    loads = []
    block = ServerTLS(cert_file=str(cert), key_file=str(key), reload_interval="10s")
    reloader = tls._Reloader(
        block, KEY, lambda: loads.append(cert.read_bytes()) or tls.server_context(block, KEY), clock=lambda: now[0]
    )
    assert len(loads) == 1 and not reloader.poll()
    cert.write_bytes(Path(files["b.pem"]).read_bytes())  # half a renewal: the key is still the old one
    now[0] = 5.0
    assert not reloader.poll() and len(loads) == 1  # the interval has not passed: no file is read
    now[0] = 11.0
    caplog.set_level(logging.WARNING, "otel_bridge.tls")
    assert not reloader.poll()  # tried, failed, kept the previous certificate
    assert f"{KEY}: the renewed certificate did not load, still serving the previous one" in caplog.text
    key.write_bytes(Path(files["b.key"]).read_bytes())
    now[0] = 22.0
    assert reloader.poll() and reloader.reloads == 1 and loads[-1] == Path(files["b.pem"]).read_bytes()
    now[0] = 40.0
    assert not reloader.poll()  # nothing changed since: nothing reloaded
    assert not tls._Reloader(
        ServerTLS(cert_file=str(cert), key_file=str(key)), KEY, lambda: 1, clock=lambda: now[0]
    ).poll()


def test_check_bind_rules(files: dict[str, str], caplog) -> None:
    plain_tls = ServerTLS(cert_file=files["a.pem"], key_file=files["a.key"])
    mutual = ServerTLS(cert_file=files["a.pem"], key_file=files["a.key"], client_ca_file=files["ca.pem"])
    check_bind("127.0.0.1:4318", "t")  # loopback: anything goes
    check_bind("0.0.0.0:4318", "t", tls=plain_tls)
    check_bind("0.0.0.0:4318", None, tls=mutual)  # mutual tls makes the token optional
    with pytest.raises(ValueError, match=r"requires a bearer token or mutual tls \(tls.client_ca_file\)"):
        check_bind("0.0.0.0:4318", None, tls=plain_tls)
    with pytest.raises(ValueError) as info:
        check_bind("0.0.0.0:4318", "t", key="receivers.otlp.protocols.http.endpoint")
    assert "configure tls (cert_file, key_file)" in str(info.value) and "insecure_allow_plaintext_token: true" in str(
        info.value
    )
    caplog.set_level(logging.WARNING)
    check_bind("0.0.0.0:4318", "secret-value", key="receivers.otlp.protocols.http.endpoint", allow_plaintext_token=True)
    assert "bearer token crosses the network unencrypted" in caplog.text and "secret-value" not in caplog.text


def test_client_context(files: dict[str, str], caplog) -> None:
    assert tls.client_context(None, "t") is True  # httpx's default verification
    ctx = tls.client_context(tls_block(ca_file=files["ca.pem"]), "exporters.observatory.tls")
    assert ctx.verify_mode == ssl.CERT_REQUIRED and ctx.check_hostname
    with pytest.raises(ValueError, match=r"^exporters.observatory.tls.ca_file: cannot read"):
        tls.client_context(tls_block(ca_file=files["missing"]), "exporters.observatory.tls")
    caplog.set_level(logging.WARNING, "otel_bridge.tls")
    skip = tls.client_context(tls_block(insecure_skip_verify=True), "exporters.flightdeck.tls")
    assert skip.verify_mode == ssl.CERT_NONE and "exporters.flightdeck.tls.insecure_skip_verify" in caplog.text


def tls_block(**kwargs: object):  # noqa: ANN201
    from otel_bridge.config import ClientTLS

    return ClientTLS(**kwargs)


def test_readme_collector_section_configs() -> None:
    """The README's side-by-side configs: otel-bridge's validates, the Collector's uses configtls names."""
    import re

    import yaml

    from otel_bridge.config import parse_config

    readme = (Path(__file__).parent.parent / "README.md").read_text()
    section = readme.split("## Behind a Collector on another host", 1)[1].split("\n## ", 1)[0]
    collector, bridge = re.findall(r"```yaml\n(.*?)```", section, re.S)
    exporter = yaml.safe_load(collector)["exporters"]["otlp/bridge"]
    assert set(exporter["tls"]) <= {
        "ca_file",
        "cert_file",
        "key_file",
        "insecure",
        "insecure_skip_verify",
        "min_version",
        "reload_interval",
    }
    assert exporter["headers"]["authorization"].startswith("Bearer ")
    cfg = parse_config(bridge, environ={"OTEL_BRIDGE_TOKEN": "t"})
    grpc = cfg.receivers.otlp.protocols.grpc
    assert (
        grpc.endpoint == "0.0.0.0:4317"
        and grpc.tls.reload_interval == 3600.0
        and cfg.receivers.otlp.auth.bearer_token_value == "t"
    )


def test_check_listeners_names_the_listener(files: dict[str, str]) -> None:
    from otel_bridge.receivers.otlp import ReceiverSettings, check_listeners

    good = ServerTLS(cert_file=files["a.pem"], key_file=files["a.key"])
    bad = ServerTLS(cert_file=files["a.pem"], key_file=files["b.key"])
    check_listeners(ReceiverSettings(grpc_tls=good, http_tls=good))
    with pytest.raises(ValueError, match=r"^receivers.otlp.protocols.grpc.tls.key_file: .* does not match"):
        check_listeners(ReceiverSettings(grpc_tls=bad, http_tls=good))
    check_listeners(ReceiverSettings(grpc_endpoint="", grpc_tls=bad, http_tls=good))  # grpc off: its block is not used
    with pytest.raises(
        ValueError, match=r"^receivers.otlp.protocols.grpc.endpoint: binding '0.0.0.0:4317' .* in clear"
    ):
        check_listeners(ReceiverSettings(grpc_endpoint="0.0.0.0:4317", bearer_token="t", http_tls=good))
