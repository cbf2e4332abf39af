"""Real FlightDeck (flightdeck-ai 1.3.0) server fixture for integration tests.

Import the fixture from a conftest or a test module::

    from flightdeck_server import flightdeck_server  # noqa: F401  (re-export the fixture)

``flightdeck_server`` is **session-scoped**: one workspace + one ``flightdeck serve``
process for the whole run.  Isolation rules for tests sharing it:

* call ``flightdeck_server.register_release(agent_id, model, version)`` for fresh
  releases (every call returns a new ``rel_...`` id, even for identical args) and
  use a distinct ``agent_id`` per test (FlightDeck's diff requires one agent per side);
* ``run_id`` is a *global* primary key in FlightDeck (not per release): always use
  unique run ids (e.g. ``uuid4``); a reused run id is silently dropped.

Workspace: ``flightdeck init --no-bundled-pricing`` (the bundled tables label per-1M
list prices as per-1k, so they are skipped), ``diff.min_candidate_runs`` /
``min_baseline_runs`` / ``min_low_runs`` lowered to 1, and an OpenAI and an Anthropic
price table (``PRICING_VERSION``) imported with ``flightdeck pricing import``.  The
importer's unit is **USD per 1,000 tokens** (``*_usd_per_1k_tokens``), so the per-1M
list prices below are divided by 1000 before import.

If the ``flightdeck`` executable is missing the fixture FAILS (never skips).
Nothing is downloaded; the server binds 127.0.0.1 on a free port.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

__all__ = [
    "ALIASES",
    "FlightDeckCLIError",
    "FlightDeckServer",
    "PRICES_PER_1M",
    "PRICING_VERSION",
    "find_flightdeck_binary",
    "flightdeck_server",
    "make_run_event",
    "running_flightdeck",
]

PRICING_VERSION = "otel-bridge-list-2025"

# model -> (provider, input, cached input, output) in USD per 1M tokens (vendor list prices).
PRICES_PER_1M: dict[str, tuple[str, float, float, float]] = {
    "gpt-4o-mini": ("openai", 0.15, 0.075, 0.60),
    "gpt-4o": ("openai", 2.50, 1.25, 10.00),
    "gpt-4.1-mini": ("openai", 0.40, 0.10, 1.60),
    "gpt-4.1": ("openai", 2.00, 0.50, 8.00),
    # Embeddings: no output tokens, no cache discount (cached billed like input).
    "text-embedding-3-small": ("openai", 0.02, 0.02, 0.0),
    # Anthropic "cached input" = cache read (0.1x input); cache writes are not modelled.
    "claude-sonnet-4-5": ("anthropic", 3.00, 0.30, 15.00),
    "claude-3-5-haiku": ("anthropic", 0.80, 0.08, 4.00),
}

# Dated/alias model ids as reported by provider responses -> canonical entry above.
# FlightDeck matches ``usage.model.model`` exactly, so aliases get their own rows.
ALIASES: dict[str, str] = {
    "gpt-4o-mini-2024-07-18": "gpt-4o-mini",
    "gpt-4o-2024-08-06": "gpt-4o",
    "gpt-4o-2024-11-20": "gpt-4o",
    "gpt-4.1-2025-04-14": "gpt-4.1",
    "gpt-4.1-mini-2025-04-14": "gpt-4.1-mini",
    "claude-sonnet-4-5-20250929": "claude-sonnet-4-5",
    "claude-3-5-haiku-20241022": "claude-3-5-haiku",
    "claude-3-5-haiku-latest": "claude-3-5-haiku",
}

DIFF_THRESHOLDS = {"min_candidate_runs": 1, "min_baseline_runs": 1, "min_low_runs": 1}
_STARTUP_TIMEOUT_S = 30.0
_CLI_TIMEOUT_S = 60.0


class FlightDeckCLIError(RuntimeError):
    """A ``flightdeck`` CLI invocation exited non-zero."""

    def __init__(self, args: list[str], returncode: int, stdout: str, stderr: str) -> None:
        self.args_list = args
        self.returncode = returncode
        self.stdout = stdout
        self.stderr = stderr
        super().__init__(f"`{' '.join(args)}` exited {returncode}\nstdout:\n{stdout}\nstderr:\n{stderr}")


def find_flightdeck_binary() -> str:
    """Path of the ``flightdeck`` CLI (venv of this interpreter first, then PATH)."""
    candidates = [Path(sys.executable).parent / "flightdeck"]
    which = shutil.which("flightdeck")
    if which:
        candidates.append(Path(which))
    for c in candidates:
        if c.is_file() and os.access(c, os.X_OK):
            return str(c)
    pytest.fail(
        "flightdeck CLI not found (looked next to "
        f"{sys.executable} and on PATH). Install the test extra: pip install -e '.[test]' "
        "(flightdeck-ai==1.3.0). FlightDeck integration tests must not be skipped.",
        pytrace=False,
    )


def _canonical(model: str) -> str:
    return ALIASES.get(model, model)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def make_run_event(
    *,
    release_id: str,
    agent_id: str,
    model: str,
    provider: str | None = None,
    run_id: str | None = None,
    type: str = "run_end",
    timestamp: dt.datetime | str | None = None,
    input_tokens: int = 0,
    output_tokens: int = 0,
    cached_input_tokens: int = 0,
    latency_ms: int | None = None,
    success: bool = True,
    error_type: str | None = None,
    tenant_id: str = "tenant_test",
    task_id: str = "task_test",
    environment: str = "local",
    **extra: Any,
) -> dict[str, Any]:
    """A JSON-ready v1 RunEvent dict (timestamp defaults to one minute ago, UTC ``Z``)."""
    if timestamp is None:
        timestamp = dt.datetime.now(dt.timezone.utc) - dt.timedelta(minutes=1)
    if isinstance(timestamp, dt.datetime):
        if timestamp.tzinfo is None:
            raise ValueError("use timezone-aware timestamps (FlightDeck breaks on naive ones)")
        timestamp = timestamp.astimezone(dt.timezone.utc).isoformat().replace("+00:00", "Z")
    if provider is None:
        provider = PRICES_PER_1M.get(_canonical(model), ("openai",))[0]
    event: dict[str, Any] = {
        "api_version": "v1",
        "type": type,
        "timestamp": timestamp,
        "workspace_id": "ws_local",
        "agent_id": agent_id,
        "release_id": release_id,
        "run_id": run_id or f"run_{uuid.uuid4().hex}",
        "tenant_id": tenant_id,
        "task_id": task_id,
        "environment": environment,
        "metrics": {"latency_ms": latency_ms, "success": success, "error_type": error_type},
        "usage": {
            "model": {
                "provider": provider,
                "model": model,
                "input_tokens": input_tokens,
                "output_tokens": output_tokens,
                "cached_input_tokens": cached_input_tokens,
            },
            "tools": [],
        },
        "labels": {},
    }
    event.update(extra)
    return event


class FlightDeckServer:
    """Handle on a running ``flightdeck serve`` with its workspace."""

    def __init__(self, workspace: Path, binary: str, env: Mapping[str, str], token: str | None) -> None:
        self.workspace = workspace
        self.binary = binary
        self.token = token
        self._env = dict(env)
        self.host = "127.0.0.1"
        self.port: int | None = None
        self.base_url = ""
        self.log_path = workspace / "flightdeck-serve.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.pricing_version = PRICING_VERSION
        self.releases: dict[str, dict[str, str]] = {}
        self._http: httpx.Client | None = None

    # ------------------------------------------------------------------ CLI
    def cli(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Run ``flightdeck <args>`` from the workspace directory."""
        argv = [self.binary, *args]
        proc = subprocess.run(
            argv,
            cwd=self.workspace,
            env=self._env,
            capture_output=True,
            text=True,
            timeout=_CLI_TIMEOUT_S,
        )
        if check and proc.returncode != 0:
            raise FlightDeckCLIError(argv, proc.returncode, proc.stdout, proc.stderr)
        return proc

    # ------------------------------------------------------------ workspace
    def _init_workspace(self) -> None:
        self.workspace.mkdir(parents=True, exist_ok=True)
        self.cli("init", "--no-bundled-pricing")
        cfg_path = self.workspace / "flightdeck.yaml"
        cfg = yaml.safe_load(cfg_path.read_text(encoding="utf-8")) or {}
        cfg.setdefault("diff", {}).update(DIFF_THRESHOLDS)
        cfg_path.write_text(yaml.safe_dump(cfg, sort_keys=False), encoding="utf-8")
        self._import_prices()

    def _import_prices(self) -> None:
        tables: dict[str, list[dict[str, Any]]] = {}
        rows = [(m, m) for m in PRICES_PER_1M] + list(ALIASES.items())
        for model, canonical in rows:
            provider, inp, cached, out = PRICES_PER_1M[canonical]
            tables.setdefault(provider, []).append(
                {
                    "model": model,
                    # importer unit: USD per 1k tokens  (= per-1M price / 1000)
                    "input_usd_per_1k_tokens": inp / 1000.0,
                    "cached_input_usd_per_1k_tokens": cached / 1000.0,
                    "output_usd_per_1k_tokens": out / 1000.0,
                }
            )
        pricing_dir = self.workspace / "pricing"
        pricing_dir.mkdir(exist_ok=True)
        for provider, entries in tables.items():
            path = pricing_dir / f"{provider}.yaml"
            doc = {"provider": provider, "pricing_version": self.pricing_version, "entries": entries}
            path.write_text(yaml.safe_dump(doc, sort_keys=False), encoding="utf-8")
            self.cli("pricing", "import", str(path))

    # -------------------------------------------------------------- process
    def restart(self) -> None:
        """Start again on the same port: a destination coming back at the same URL."""
        self._start(port=self.port)

    def _start(self, port: int | None = None) -> None:
        last_error = ""
        for _attempt in range(3):  # free-port races are rare; retry a couple of times
            self.port = port or _free_port()
            self.base_url = f"http://{self.host}:{self.port}"
            log = self.log_path.open("ab")
            log.write(f"\n=== flightdeck serve --port {self.port} ===\n".encode())
            log.flush()
            self.process = subprocess.Popen(
                [self.binary, "serve", "--host", self.host, "--port", str(self.port)],
                cwd=self.workspace,
                env=self._env,
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
            log.close()
            deadline = time.monotonic() + _STARTUP_TIMEOUT_S
            while time.monotonic() < deadline:
                if self.process.poll() is not None:
                    last_error = f"flightdeck serve exited with code {self.process.returncode}"
                    break
                try:
                    r = httpx.get(self.base_url + "/health", timeout=1.0)
                    if r.status_code == 200 and r.json().get("status") == "ok":
                        self._http = httpx.Client(base_url=self.base_url, timeout=10.0, headers=self._auth_headers())
                        return
                except httpx.HTTPError as exc:
                    last_error = f"{type(exc).__name__}: {exc}"
                time.sleep(0.1)
            else:
                last_error = f"no answer on {self.base_url}/health within {_STARTUP_TIMEOUT_S}s"
            self.stop()
        pytest.fail(
            f"FlightDeck server did not start: {last_error}\n--- server log ---\n{self.log_tail()}",
            pytrace=False,
        )

    def _auth_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"} if self.token else {}

    def alive(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def stop(self) -> None:
        """Stop the server process by PID (SIGTERM, then SIGKILL after 10 s)."""
        if self._http is not None:
            self._http.close()
            self._http = None
        proc, self.process = self.process, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def log_tail(self, max_chars: int = 8000) -> str:
        try:
            text = self.log_path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return "(no server log)"
        return text[-max_chars:]

    # ------------------------------------------------------------------ API
    def register_release(
        self,
        agent_id: str,
        model: str,
        version: str = "v1",
        *,
        provider: str | None = None,
        environment: str | None = None,
    ) -> str:
        """Register a new release (fresh ``rel_...`` id every call) via the CLI."""
        canonical = _canonical(model)
        if provider is None:
            if canonical not in PRICES_PER_1M:
                raise KeyError(f"no price for model {model!r}; pass provider= explicitly")
            provider = PRICES_PER_1M[canonical][0]
        bundle = self.workspace / "releases" / f"{agent_id}-{version}-{uuid.uuid4().hex[:8]}"
        (bundle / "prompts").mkdir(parents=True)
        (bundle / "prompts" / "system.md").write_text(f"System prompt for {agent_id} {version}\n")
        artifact = {
            "api_version": "v1",
            "kind": "Release",
            "metadata": {"name": agent_id, "version": version},
            "spec": {
                "agent": {"agent_id": agent_id},
                "runtime": {"provider": provider, "model": model},
                "prompts": {"system_ref": "prompts/system.md"},
                "pricing_reference": {"provider": provider, "pricing_version": self.pricing_version},
            },
        }
        (bundle / "release.yaml").write_text(yaml.safe_dump(artifact, sort_keys=False))
        args = ["release", "register", str(bundle)]
        if environment:
            args += ["--env", environment]
        release_id = self.cli(*args).stdout.strip().splitlines()[-1].strip()
        assert release_id.startswith("rel_"), release_id
        self.releases[release_id] = {"agent_id": agent_id, "model": model, "version": version, "provider": provider}
        return release_id

    def _get(self, path: str, params: Mapping[str, Any]) -> dict[str, Any]:
        assert self._http is not None, "server not running"
        r = self._http.get(path, params={k: v for k, v in params.items() if v is not None})
        if r.status_code != 200:
            raise AssertionError(
                f"GET {path} {dict(params)} -> HTTP {r.status_code}: {r.text}\n"
                f"--- server log tail ---\n{self.log_tail(3000)}"
            )
        return r.json()

    def runs_page(
        self, release_id: str, *, window: str = "7d", offset: int = 0, limit: int = 500, **filters: Any
    ) -> dict[str, Any]:
        """One raw ``GET /v1/runs`` page (keys: events, matched_total, returned, truncated, ...)."""
        return self._get(
            "/v1/runs",
            {"release_id": release_id, "window": window, "offset": offset, "limit": limit, **filters},
        )

    def runs(self, release_id: str, *, window: str = "7d", **filters: Any) -> list[dict[str, Any]]:
        """All run events of a release in the window (all pages; newest first).

        Filters: environment (default: workspace default "local"), tenant_id, task_id,
        trace_id, session_id, span_id.  Note ``timestamp`` comes back with ``Z``.
        """
        events: list[dict[str, Any]] = []
        offset = 0
        while True:
            page = self.runs_page(release_id, window=window, offset=offset, limit=500, **filters)
            events.extend(page["events"])
            offset += page["returned"]
            if not page["truncated"] or page["returned"] == 0:
                return events

    def post_events(self, events: list[dict[str, Any]]) -> httpx.Response:
        """Raw ``POST /v1/events`` (no status check)."""
        assert self._http is not None, "server not running"
        return self._http.post("/v1/events", json={"events": events})

    def diff(
        self,
        baseline_release_id: str,
        candidate_release_id: str,
        *,
        window: str = "7d",
        environment: str | None = None,
        tenant_id: str | None = None,
        task_id: str | None = None,
    ) -> dict[str, Any]:
        """``flightdeck release diff B C --window W --output json`` parsed (raises FlightDeckCLIError)."""
        import json

        args = ["release", "diff", baseline_release_id, candidate_release_id, "--window", window, "--output", "json"]
        if environment:
            args += ["--env", environment]
        if tenant_id:
            args += ["--tenant", tenant_id]
        if task_id:
            args += ["--task", task_id]
        return json.loads(self.cli(*args).stdout)

    @staticmethod
    def price_of(model: str) -> tuple[float, float, float]:
        """(input, cached input, output) USD **per token** as imported into FlightDeck."""
        _provider, inp, cached, out = PRICES_PER_1M[_canonical(model)]
        return inp / 1e6, cached / 1e6, out / 1e6

    @classmethod
    def cost_of(cls, event: Mapping[str, Any]) -> float:
        """FlightDeck's per-event cost: input*p_in + cached*p_cached + output*p_out.

        ``cached_input_tokens`` is charged *in addition to* ``input_tokens`` (FlightDeck
        does not subtract it), so ``input_tokens`` must be the *uncached* input.
        """
        u = event["usage"]["model"]
        p_in, p_cached, p_out = cls.price_of(u["model"])
        return u["input_tokens"] * p_in + u.get("cached_input_tokens", 0) * p_cached + u["output_tokens"] * p_out


@contextmanager
def running_flightdeck(workspace: Path, *, token: str | None = None) -> Iterator[FlightDeckServer]:
    """Init a workspace in ``workspace``, start ``flightdeck serve``, stop it on exit.

    ``token`` sets ``FLIGHTDECK_LOCAL_API_TOKEN`` for the server (Bearer required on
    ingest and GET /v1/*); by default the variable is removed (loopback-only ingest).
    """
    binary = find_flightdeck_binary()
    env = {k: v for k, v in os.environ.items() if k != "FLIGHTDECK_LOCAL_API_TOKEN"}
    if token:
        env["FLIGHTDECK_LOCAL_API_TOKEN"] = token
    env["PYTHONUNBUFFERED"] = "1"
    server = FlightDeckServer(workspace, binary, env, token)
    try:
        server._init_workspace()
        server._start()
        yield server
    finally:
        server.stop()


def _report_log(config: pytest.Config, server: FlightDeckServer, reason: str) -> None:
    text = f"\n===== FlightDeck server log ({reason}; {server.log_path}) =====\n{server.log_tail()}\n"
    tr = config.pluginmanager.get_plugin("terminalreporter")
    if tr is not None:
        tr.write_line(text)
    else:
        sys.stderr.write(text)


@pytest.fixture(scope="session")
def flightdeck_server(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[FlightDeckServer]:
    """Session-wide real FlightDeck server; see module docstring for isolation rules."""
    failed_before = request.session.testsfailed
    with running_flightdeck(tmp_path_factory.mktemp("flightdeck") / "ws") as server:
        try:
            yield server
        finally:
            died = not server.alive()
            if died or request.session.testsfailed > failed_before:
                _report_log(request.config, server, "server died" if died else "tests failed")
