"""Finding and calling a running ``otel-bridge serve``: the serving process owns the chDB directory.

``serve`` writes ``<data dir>.server.json`` (its HTTP URL and pid — no secrets) next to the data directory and
removes it at exit; the CLI reads it, checks the pid and ``/healthz``, and then asks the HTTP API instead of
opening the store (which a second process cannot do).
"""

from __future__ import annotations

import os
import ssl
from pathlib import Path
from typing import Any

import httpx
import orjson

DEFAULT_DATA_DIR = "./.otel-bridge/data"
TOKEN_ENV = "OTEL_BRIDGE_TOKEN"


def server_file(data_dir: str | os.PathLike[str] | None) -> Path:
    path = Path(data_dir or DEFAULT_DATA_DIR).expanduser().resolve()
    return path.with_name(path.name + ".server.json")


def announce(data_dir: str | os.PathLike[str] | None, url: str) -> Path:
    path = server_file(data_dir)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(orjson.dumps({"url": url, "pid": os.getpid()}))
    return path


def withdraw(data_dir: str | os.PathLike[str] | None) -> None:
    path = server_file(data_dir)
    try:
        if orjson.loads(path.read_bytes()).get("pid") == os.getpid():
            path.unlink()
    except (OSError, ValueError):
        pass


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class ServerClient:
    """The analytics API of a running server."""

    def __init__(
        self, url: str, token: str | None = None, timeout: float = 30.0, verify: ssl.SSLContext | bool = True
    ) -> None:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        self.url = url
        self._http = httpx.Client(base_url=url, headers=headers, timeout=timeout, verify=verify)

    @classmethod
    def find(cls, data_dir: str | os.PathLike[str] | None, verify: ssl.SSLContext | bool = True) -> ServerClient | None:
        """The server serving this data dir, if one runs and answers; ``verify`` checks an https listener
        (``otel_bridge.tls.client_context``). A certificate the client cannot verify is an error, not "no server"."""
        try:
            info = orjson.loads(server_file(data_dir).read_bytes())
        except (OSError, ValueError):
            return None
        if not _alive(int(info.get("pid", 0))):
            return None
        client = cls(info["url"], os.environ.get(TOKEN_ENV) or None, verify=verify)
        try:
            if client._http.get("/healthz", timeout=2).status_code == 200:
                return client
        except httpx.ConnectError as exc:
            if "SSL" in str(exc) or "certificate" in str(exc).lower():
                client.close()
                raise ValueError(
                    f"{info['url']}: tls: {exc} (pass --ca-file, or --config with the server's config file)"
                ) from None
        except httpx.HTTPError:
            pass
        client.close()
        return None

    def get(self, path: str, params: dict[str, Any]) -> Any:
        clean = {k: v for k, v in params.items() if v is not None and v != []}
        response = self._http.get(path, params=clean)
        if response.status_code != 200:
            detail = (
                response.json().get("detail")
                if response.headers.get("content-type", "").startswith("application/json")
                else response.text
            )
            raise ValueError(f"{self.url}{path}: HTTP {response.status_code}: {detail}")
        return response.json()

    def close(self) -> None:
        self._http.close()
