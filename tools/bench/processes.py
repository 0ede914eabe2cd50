"""Whole processes as the figures start them: a private environment, a timed run, and
whether the ``vault`` they run is a regular or an editable install."""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import sysconfig
import time
from collections.abc import Sequence
from pathlib import Path

from eventstore import encode_unseal_key


def child_env(home: Path, key: bytes, store: Path) -> dict[str, str]:
    """An embedded CLI's environment: ``store`` and its key, a private HOME, and none of the
    caller's store or client settings (with ``VAULT_ADDR`` the CLI would go over HTTP)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULTLOG_", "VAULT_", "BAO_"))}
    env.update(
        VAULTLOG_DIR=str(store),
        VAULTLOG_UNSEAL_KEY=encode_unseal_key(key),
        XDG_CONFIG_HOME=str(home / "config"),
        XDG_DATA_HOME=str(home / "share"),
        HOME=str(home),
    )
    return env


def run_seconds(argv: Sequence[str], env: dict[str, str], cwd: Path) -> float:
    start = time.perf_counter()
    done = subprocess.run(
        argv,
        env=env,
        cwd=cwd,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    elapsed = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed: {done.stderr.strip()}")
    return elapsed


def install_kind(env: dict[str, str], cwd: Path) -> str:
    """How the ``vault`` beside this interpreter finds vaultlog: 'regular' or 'editable'."""
    where = subprocess.run(
        [sys.executable, "-c", "import tools; print(tools.__file__)"],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    ).stdout.strip()
    purelib = Path(sysconfig.get_paths()["purelib"]).resolve()
    return "regular" if where and Path(where).resolve().is_relative_to(purelib) else "editable"


def stop_process(process: subprocess.Popen[bytes], timeout: float) -> None:
    """Terminate, then kill; then kill whatever it left in the session it was started in
    (``start_new_session=True``)."""
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout)
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(process.pid, signal.SIGKILL)
