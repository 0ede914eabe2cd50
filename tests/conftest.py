"""Shared fixtures: a private store per test and a runner for the installed ``vault``."""

from __future__ import annotations

import compileall
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from backends import Core
from eventstore import decode_unseal_key, new_key
from projections import Event, Store
from tests.iam_endpoint import IamProxy, MotoServer
from tools.bench.postgres import CREATION, AppDatabase, PostgresServer
from tools.transport import open_core as open_core  # the tests open Cores with it


def pytest_sessionstart(session: pytest.Session) -> None:
    """Compile the project's modules once: every ``vault`` the tests start then reads
    bytecode instead of compiling its sources again (PYTHONDONTWRITEBYTECODE, set on these
    machines, stops Python writing it, not reading it; an editable install has none)."""
    root = Path(__file__).resolve().parent.parent
    for package in ("eventstore", "backends", "projections", "tools"):
        compileall.compile_dir(root / package, quiet=1)


def vault_executable() -> str:
    """The ``vault`` installed beside this interpreter (the one the README installs)."""
    beside = Path(sys.executable).parent / "vault"
    found = str(beside) if beside.exists() else shutil.which("vault")
    if not found:
        pytest.fail("the vault executable is not installed: pip install -e '.[test]'")
    return found


@dataclass
class VaultCLI:
    """Runs ``vault`` in a subprocess against one private data and config directory."""

    home: Path
    env: dict[str, str]

    @property
    def data_dir(self) -> Path:
        return Path(self.env["VAULTLOG_DIR"])

    def run(
        self, *args: str, stdin: str | None = None, check: bool = False, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        result = subprocess.run(
            [vault_executable(), *args],
            input=stdin,
            capture_output=True,
            text=True,
            env=self.env,
            cwd=self.home,
            timeout=timeout,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"vault {' '.join(args)} failed: {result.stderr}")
        return result

    def __call__(self, *args: str, stdin: str | None = None) -> str:
        """stdout of a command that must succeed."""
        return self.run(*args, stdin=stdin, check=True).stdout

    def unseal_key(self) -> bytes:
        return decode_unseal_key((self.home / "config/vaultlog/unseal.key").read_text())

    def events(self) -> list[Event]:
        """Every event in the store's log, read-only (opening runs no expiry)."""
        reader = Store.open(self.data_dir, self.unseal_key(), write=False)
        try:
            return list(reader.events())
        finally:
            reader.close()


def cli_env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VAULTLOG_")}
    env.update(
        VAULTLOG_DIR=str(home / "data"),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "share"),
        HOME=str(home),
        VAULTLOG_LOCK_TIMEOUT="60",
    )
    return env


@pytest.fixture
def vault(tmp_path: Path) -> VaultCLI:
    return VaultCLI(tmp_path, cli_env(tmp_path))


@pytest.fixture
def unseal_key() -> bytes:
    return new_key()


@pytest.fixture
def core(tmp_path: Path, unseal_key: bytes) -> Iterator[Core]:
    """A writable store opened in-process."""
    opened = open_core(tmp_path / "store", unseal_key, write=True)
    try:
        yield opened
    finally:
        opened.store.close()


@pytest.fixture(scope="session")
def moto_server() -> Iterator[MotoServer]:
    server = MotoServer()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def iam_proxy(moto_server: MotoServer) -> Iterator[IamProxy]:
    proxy = IamProxy(moto_server.port)
    try:
        yield proxy
    finally:
        proxy.stop()


@pytest.fixture(scope="session")
def postgres() -> Iterator[PostgresServer]:
    """One throwaway PostgreSQL for the session (each test takes a database of its own)."""
    server = PostgresServer()
    server.start()
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def pg_url(postgres: PostgresServer) -> str:
    """The URL of a new, empty database."""
    return postgres.new_database()


@pytest.fixture
def app_db(postgres: PostgresServer) -> AppDatabase:
    """An application's database, with an administrator for the database backend."""
    return AppDatabase.create(postgres)


@pytest.fixture
def database(vault: VaultCLI, app_db: AppDatabase) -> VaultCLI:
    """The README's database walkthrough set up: ``database/`` mounted, ``app``
    configured, and the ``readonly`` role of the issue's example."""
    vault("secrets", "enable", "database")
    vault("write", "database/config/app", *app_db.config_args("readonly"))
    vault(
        "write",
        "database/roles/readonly",
        "db_name=app",
        "default_ttl=1h",
        "max_ttl=24h",
        f"creation_statements={CREATION}",
    )
    return vault
