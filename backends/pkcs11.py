"""The ``pkcs11`` backend: the generic backend with its data key in the HSM.

``vault secrets enable -path=vault-hsm pkcs11``. The mount's AES-256 key is generated inside
the HSM, sensitive and never extractable, and every value is sealed and opened by the HSM
itself (``eventstore.hsm``), bound to the same associated data as on any mount; the sealed
values are in the log, so history, ``-at`` reads, restore and audit work as everywhere.
Unmounting destroys the key object in the token: crypto-shredding done by the hardware.
Named after the interface, as Vault names its ``seal "pkcs11"``: it is what the mount needs.
If the HSM cannot be reached, its requests fail (503) and every other mount works on.
"""

from __future__ import annotations

from typing import ClassVar

from backends.contract import PathRules
from backends.generic import GenericBackend


class HsmBackend(GenericBackend):
    """Stores what it is given, as ``generic`` does, sealed by a key in the HSM."""

    paths: ClassVar[PathRules] = PathRules(existence_check=True, key_in_hsm=True)
