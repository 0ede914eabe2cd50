"""The entry point's plain path: ``vault read PATH`` and ``vault write PATH K=V`` run
without Typer, print what the full CLI prints, and every other spelling goes to Typer."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from tools.quick import plain

PLAIN = [
    ["read", "secret/x"],
    ["read", "-field=value", "secret/x"],
    ["read", "secret/x", "--format=json"],
    ["read", "-at=1", "-at=2", "secret/x"],
    ["write", "secret/x", "a=1", "b=@f"],
    ["write", "secret/x"],
]
FULL = [
    ["read"],
    ["read", "secret/x", "secret/y"],
    ["read", "--field", "value", "secret/x"],
    ["read", "-h", "secret/x"],
    ["read", "-bogus=1", "secret/x"],
    ["read", "---field=v", "secret/x"],
    ["read", "-", "secret/x"],
    ["read", "--", "secret/x"],
    ["write", "secret/x", "-"],
    ["write", "-f", "secret/x"],
    ["write", "secret/x", "a=1", "--force"],
    ["list", "secret/"],
    [],
]


@pytest.mark.parametrize("args", PLAIN)
def test_plain_spellings_take_the_plain_path(args: list[str]) -> None:
    assert plain(args) is not None


@pytest.mark.parametrize("args", FULL)
def test_every_other_spelling_goes_to_typer(args: list[str]) -> None:
    assert plain(args) is None


def unnamed(output: str) -> list[str]:
    """Output lines but the request's id, which is new in every process."""
    return [line for line in output.splitlines() if '"request_id"' not in line]


def test_the_plain_path_prints_and_exits_as_the_full_cli(tmp_path: Path) -> None:
    """Each spelling run both ways, in fresh processes on one store: same stdout, stderr
    and exit code; the plain path never imports typer."""
    env = {**os.environ, "VAULTLOG_DIR": str(tmp_path / "store")}
    env.pop("VAULT_ADDR", None)
    quick = "import sys, tools.quick as q; q.main(sys.argv[1:])"
    full = "import sys, tools.cli as c; c.main(sys.argv[1:])"
    probe = "import sys, tools.quick as q; q.plain(sys.argv[1:])(); print('typer' in sys.modules)"

    def run(code: str, *args: str) -> tuple[int, str, str]:
        out = subprocess.run(
            [sys.executable, "-c", code, *args], env=env, capture_output=True, text=True
        )
        return out.returncode, out.stdout, out.stderr

    assert run(quick, "write", "secret/x", "value=1", "n=2")[0] == 0
    for args in (
        ["write", "secret/y", "a=1"],
        ["write", "secret/z"],
        ["read", "secret/x"],
        ["read", "-field=n", "secret/x"],
        ["read", "-field=none", "secret/x"],
        ["read", "-format=json", "secret/x"],
        ["read", "-format=yaml", "secret/x"],
        ["read", "-at=1", "secret/x"],
        ["read", "secret/missing"],
        ["read", "nomount/x"],
    ):
        assert plain(args) is not None
        got = run(quick, *args)
        if args[0] == "write" and got[0] == 0:  # the same write again, through Typer
            got = run(quick, "write", "secret/w", *args[2:])
            assert got == run(full, "write", "secret/w", *args[2:]), args
            continue
        theirs = run(full, *args)
        assert (got[0], got[2]) == (theirs[0], theirs[2]), args
        assert unnamed(got[1]) == unnamed(theirs[1]), args
    assert run(probe, "read", "secret/x")[1].endswith("False\n")
