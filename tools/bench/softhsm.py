"""A SoftHSM2 token of its own, for the tests and the bench: Debian's ``softhsm2``, a
software token behind the same PKCS#11 interface as an HSM, kept in one directory
(``SOFTHSM2_CONF`` names its configuration), with a random PIN.

What the token holds is read by a separate process (``objects``, ``try_to_read``), with
python-pkcs11 and not through vaultlog, so a test's proof does not rest on the code under
test.
"""

from __future__ import annotations

import json
import os
import secrets
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

from eventstore.hsm import HsmConfig

LIBRARIES = (
    "/usr/lib/softhsm/libsofthsm2.so",  # Debian, Ubuntu
    "/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
    "/usr/lib64/pkcs11/libsofthsm2.so",  # Fedora
    "/usr/local/lib/softhsm/libsofthsm2.so",
)
INSTALL = "SoftHSM2 is not installed: apt-get install softhsm2 (the README's test command does)"

_LIST = """
import json, sys, pkcs11
from pkcs11 import Attribute, ObjectClass
lib = pkcs11.lib(sys.argv[1])
session = lib.get_token(token_label=sys.argv[2]).open(user_pin=sys.argv[3])
found = []
for key in session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY}):
    entry = {"label": key[Attribute.LABEL]}
    for name in ("EXTRACTABLE", "SENSITIVE", "NEVER_EXTRACTABLE", "TOKEN"):
        entry[name.lower()] = bool(key[getattr(Attribute, name)])
    if len(sys.argv) > 4 and entry["label"] == sys.argv[4]:
        try:
            key[Attribute.VALUE]
            entry["value"] = "read"
        except pkcs11.PKCS11Error as exc:
            entry["value"] = type(exc).__name__
    found.append(entry)
print(json.dumps(found))
"""


def library() -> str:
    """SoftHSM2's PKCS#11 library; ``RuntimeError`` naming the install if it is missing."""
    for path in LIBRARIES:
        if Path(path).exists():
            return path
    raise RuntimeError(INSTALL)


class SoftHsm:
    """One initialised SoftHSM2 token in ``directory``."""

    def __init__(self, directory: Path, label: str = "vaultlog") -> None:
        self.directory, self.label, self.lib = directory, label, library()
        self.pin, self.so_pin = secrets.token_hex(8), secrets.token_hex(8)
        self.tokens = directory / "tokens"
        self.tokens.mkdir(parents=True, mode=0o700)
        self.conf = directory / "softhsm2.conf"
        self.conf.write_text(
            f"directories.tokendir = {self.tokens}\nobjectstore.backend = file\n"
            "log.level = ERROR\nslots.removable = false\n"
        )
        init = ["--init-token", "--free", "--label", label, "--so-pin", self.so_pin]
        subprocess.run(
            ["softhsm2-util", *init, "--pin", self.pin],
            env={**os.environ, **self.env},
            check=True,
            capture_output=True,
        )

    @property
    def env(self) -> dict[str, str]:
        return {"SOFTHSM2_CONF": str(self.conf)}

    def config(self, key_label: str = "vaultlog-seal") -> HsmConfig:
        return HsmConfig(
            lib=self.lib,
            token_label=self.label,
            pin=self.pin,
            key_label=key_label,
            generate_key=True,
        )

    def seal_block(self, key_label: str = "vaultlog-seal", pin: str = "") -> str:
        """``seal "pkcs11"`` for a server's configuration (``pin``: instead of the PIN,
        such as ``env://VAR``)."""
        return (
            f'seal "pkcs11" {{\n  lib = "{self.lib}"\n  token_label = "{self.label}"\n'
            f'  pin = "{pin or self.pin}"\n  key_label = "{key_label}"\n'
            '  generate_key = "true"\n}\n'
        )

    def objects(self, read: str = "") -> list[dict[str, Any]]:
        """The token's secret keys and their flags, as another process sees them (``read``:
        try to read that key's value too; ``value`` says what the token answered)."""
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                _LIST,
                self.lib,
                self.label,
                self.pin,
                *([read] if read else []),
            ],
            env={**os.environ, **self.env},
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
        found: list[dict[str, Any]] = json.loads(done.stdout)
        return found

    def labels(self, prefix: str = "") -> list[str]:
        return sorted(o["label"] for o in self.objects() if o["label"].startswith(prefix))

    def remove(self) -> None:
        """Take the token away (its files moved aside), as unplugging an HSM would."""
        self.tokens.rename(self.directory / "tokens.away")
        self.tokens.mkdir(mode=0o700)

    def restore(self) -> None:
        shutil.rmtree(self.tokens)
        (self.directory / "tokens.away").rename(self.tokens)
