"""An HSM through PKCS#11: AES-256 keys generated inside the token, never extractable, that
seal and open values there, in the same format and with the same associated data as
``eventstore.crypto.Sealer`` (``nonce | ciphertext | tag``).

PKCS#11 is initialised once per process (``C_Initialize``), so a process has one HSM,
configured once: by the server from its ``seal "pkcs11"`` stanza, or from Vault's
``VAULT_HSM_*`` environment variables (``configure``, ``current``). Sessions are pooled
(at most ``SESSIONS``, the first one logged in, which logs in the others); a failure that
is not about the data (the token removed, a stale session or handle) drops them all and
reconnects once, so an HSM that comes back is used again without a restart, and one that
is gone is an ``HsmUnavailableError`` naming the token, never the PIN. A refused PIN is
not tried again by this process: a real HSM locks a PIN after a few failures.

python-pkcs11 (``pkcs11``) is imported only by a process that configures an HSM.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

from eventstore.crypto import KEY_BYTES, NONCE_BYTES, OVERHEAD, SealError, _aad
from eventstore.errors import HsmUnavailableError, ShreddedError, VaultlogError

T = TypeVar("T")
SESSIONS = 4
AES_GCM = 0x1087  # CKM_AES_GCM, the one mechanism used (authenticated, as OpenBao insists)
HSM_REF = b"pkcs11:"  # a keyring entry naming a key object in the HSM instead of a key
PIN_REFUSED = "the HSM refused the PIN (it was not shown; not tried again until a restart)"
_MECHANISMS = {"0x1087": AES_GCM, "4231": AES_GCM, "aes_gcm": AES_GCM, "ckm_aes_gcm": AES_GCM}


class HsmConfigError(VaultlogError):
    """The HSM's settings cannot be used (the message names the setting, never the PIN)."""


@dataclass(frozen=True)
class HsmConfig:
    """Vault's ``seal "pkcs11"`` keys; ``pin`` is never shown (``repr`` leaves it out)."""

    lib: str
    slot: int | None = None
    token_label: str = ""
    pin: str = field(default="", repr=False)
    key_label: str = ""  # the seal's key; mounts' keys are labelled by the store
    mechanism: int = AES_GCM
    generate_key: bool = False

    @property
    def token(self) -> str:
        return f'token "{self.token_label}"' if self.token_label else f"slot {self.slot}"

    @classmethod
    def from_settings(cls, settings: dict[str, Any], where: str) -> HsmConfig:
        """From a ``seal "pkcs11"`` block; each ``VAULT_HSM_*`` variable set wins over its
        key, as in Vault. The PIN may be ``env://VAR`` or ``file:///path`` instead of
        itself, so the configuration file need not hold it."""

        def get(key: str) -> str:
            value = os.environ.get(f"VAULT_HSM_{key.upper()}") or settings.get(key, "")
            return str(value) if value is not None else ""

        lib = get("lib")
        if not lib:
            raise HsmConfigError(f'{where}: seal "pkcs11" needs lib (the PKCS#11 library)')
        slot_text, label = get("slot"), get("token_label")
        if not slot_text and not label:
            raise HsmConfigError(f'{where}: seal "pkcs11" needs slot or token_label')
        if slot_text and not slot_text.isdigit():
            raise HsmConfigError(f'{where}: seal "pkcs11": slot must be a decimal number')
        mechanism = get("mechanism").lower() or "0x1087"
        if mechanism not in _MECHANISMS:
            raise HsmConfigError(
                f'{where}: seal "pkcs11": mechanism {mechanism} is not supported (CKM_AES_GCM)'
            )
        pin = _pin(get("pin"), where)
        if not pin:
            raise HsmConfigError(f'{where}: seal "pkcs11" needs pin (or VAULT_HSM_PIN)')
        return cls(
            lib=lib,
            slot=int(slot_text) if slot_text else None,
            token_label=label,
            pin=pin,
            key_label=get("key_label"),
            mechanism=_MECHANISMS[mechanism],
            generate_key=get("generate_key").lower() in ("1", "true"),
        )


def _pin(value: str, where: str) -> str:
    """The PIN itself, read from ``env://VAR`` or ``file:///path`` if so given."""
    if value.startswith("env://"):
        return os.environ.get(value.removeprefix("env://"), "")
    if value.startswith("file://"):
        path = value.removeprefix("file://")
        try:
            with open(path, encoding="utf-8") as file:
                return file.read().strip()
        except OSError as exc:
            raise HsmConfigError(
                f'{where}: seal "pkcs11": cannot read the PIN file {path}: {exc.strerror}'
            ) from None
    return value


class Hsm:
    """One PKCS#11 token; what it does to keys is named by their labels."""

    def __init__(self, config: HsmConfig) -> None:
        self.config = config
        self._lock = threading.Lock()
        self._lib: Any = None
        self._token: Any = None
        self._idle: list[_Session] = []
        self._open = 0  # sessions of this connection, idle or lent
        self._generation = 0  # a reconnection starts a new one; older sessions are dropped
        self._free = threading.Semaphore(SESSIONS)
        self._pin_refused = False

    # ---- what it does ------------------------------------------------------------------

    def sealer(self, label: str) -> HsmSealer:
        return HsmSealer(self, label)

    def has_key(self, label: str) -> bool:
        return self._call(lambda s: s.key(label, fresh=True) is not None)

    def generate(self, label: str) -> None:
        """A new AES-256 key, in the token, sensitive and never extractable."""
        self._call(lambda s: s.generate(label))

    def destroy(self, label: str) -> bool:
        """Destroy ``label``'s key object; whether there was one."""
        return self._call(lambda s: s.destroy(label))

    def labels(self, prefix: str = "") -> list[str]:
        """Labels of the token's secret keys that start with ``prefix``."""
        return self._call(lambda s: s.labels(prefix))

    def encrypt(self, label: str, nonce: bytes, plaintext: bytes, aad: bytes) -> bytes:
        return self._call(lambda s: s.crypt(label, "encrypt", nonce, plaintext, aad))

    def decrypt(self, label: str, nonce: bytes, sealed: bytes, aad: bytes) -> bytes:
        """The plaintext; ``SealError`` if the token (found sound) refuses the tag."""
        try:
            return self._call(lambda s: s.crypt(label, "decrypt", nonce, sealed, aad))
        except _Refused:
            raise SealError("authentication failed") from None

    def derive(self, label: str, purpose: bytes) -> bytes:
        """A 32-byte key derived inside the token from ``label``'s key (AES-CMAC, as a PRF,
        of ``purpose`` twice over): gone once the key is destroyed."""
        return self._call(
            lambda s: s.cmac(label, purpose + b"\x01") + s.cmac(label, purpose + b"\x02")
        )

    def close(self) -> None:
        """Close every session and finalise the library (another ``Hsm`` may start it)."""
        with self._lock:
            self._drop()
            if self._lib is not None:
                with contextlib.suppress(Exception):
                    self._lib.finalize()
                self._lib = None

    # ---- sessions ----------------------------------------------------------------------

    def _call(self, work: Callable[[_Session], T]) -> T:
        """``work`` on a pooled session; a failure of the token (not of the data) drops
        every session and is tried once more on a new connection."""
        from pkcs11.exceptions import PKCS11Error

        for attempt in (1, 2):
            with self._free:
                session = self._borrow()
                try:
                    result = work(session)
                except (PKCS11Error, _Stale) as exc:
                    self._failed(session)
                    if attempt == 2:
                        raise HsmUnavailableError(self._unavailable(exc)) from None
                    continue
                except BaseException:
                    self._give_back(session)
                    raise
                self._give_back(session)
                return result
        raise AssertionError("unreachable")

    def _borrow(self) -> _Session:
        """An idle session, or a new one (opened under the lock: the first logs in)."""
        with self._lock:
            if self._idle:
                return self._idle.pop()
            if self._pin_refused:  # never again: an HSM locks a PIN tried too often
                raise HsmUnavailableError(PIN_REFUSED)
            try:
                if self._token is None:
                    self._token = _Token(self._library(), self.config)
                session = _Session(self._token.open(self._open == 0, self.config.pin))
            except HsmUnavailableError as exc:
                self._pin_refused = str(exc) == PIN_REFUSED
                self._drop()
                raise
            except (OSError, RuntimeError) as exc:  # PKCS11Error is a RuntimeError
                self._drop()
                raise HsmUnavailableError(self._unavailable(exc)) from None
            self._open += 1
            session.generation = self._generation
            return session

    def _library(self) -> Any:
        import pkcs11

        if self._lib is None:
            self._lib = pkcs11.lib(self.config.lib)
        else:
            self._lib.reinitialize()  # the only way PKCS#11 sees a token come back
        return self._lib

    def _give_back(self, session: _Session) -> None:
        with self._lock:
            if session.generation == self._generation:
                self._idle.append(session)
            # else: of a dropped connection, already counted out

    def _failed(self, session: _Session) -> None:
        with self._lock:
            if session.generation == self._generation:
                self._drop()

    def _drop(self) -> None:
        """Forget every session and the token: the next call reconnects."""
        for session in self._idle:
            with contextlib.suppress(Exception):
                session.session.close()
        self._idle, self._open, self._token = [], 0, None
        self._generation += 1

    def _unavailable(self, exc: BaseException) -> str:
        reason = type(exc).__name__ if not str(exc) else str(exc)
        return f"the HSM is unavailable ({self.config.token}): {reason}"


class _Stale(Exception):
    """A key object that the token no longer knows by the handle we hold."""


class _Refused(Exception):
    """The token refused a tag while its key is there: the data, not the HSM."""


class _Token:
    """A token found in a library, opening sessions on it."""

    def __init__(self, library: Any, config: HsmConfig) -> None:
        from pkcs11.exceptions import NoSuchToken

        try:
            if config.token_label:
                self.token = library.get_token(token_label=config.token_label)
            else:
                slots = [s for s in library.get_slots() if s.slot_id == config.slot]
                if not slots:
                    raise NoSuchToken(f"no slot {config.slot}")
                self.token = slots[0].get_token()
        except NoSuchToken:
            raise HsmUnavailableError(f"the HSM is unavailable: it has no {config.token}") from None

    def open(self, first: bool, pin: str) -> Any:
        from pkcs11.exceptions import PinIncorrect, UserAlreadyLoggedIn

        if not first:
            return self.token.open(rw=True)  # logged in already: login is per application
        try:
            return self.token.open(rw=True, user_pin=pin)
        except UserAlreadyLoggedIn:
            return self.token.open(rw=True)
        except PinIncorrect:
            raise HsmUnavailableError(PIN_REFUSED) from None


class _Session:
    """One PKCS#11 session and the key objects it found, by label."""

    def __init__(self, session: Any) -> None:
        self.session, self.generation = session, 0
        self._keys: dict[str, Any] = {}

    def key(self, label: str, *, fresh: bool = False) -> Any:
        from pkcs11 import Attribute, KeyType, ObjectClass

        found = None if fresh else self._keys.get(label)
        if found is None:
            objects = list(
                self.session.get_objects(
                    {
                        Attribute.CLASS: ObjectClass.SECRET_KEY,
                        Attribute.KEY_TYPE: KeyType.AES,
                        Attribute.LABEL: label,
                    }
                )
            )
            if not objects:
                self._keys.pop(label, None)
                return None
            found = self._keys[label] = objects[0]
        return found

    def _must(self, label: str) -> Any:
        key = self.key(label)
        if key is None:
            raise ShreddedError(f"the HSM has no key {label}: it was destroyed")
        return key

    def generate(self, label: str) -> None:
        from pkcs11 import Attribute, KeyType

        self._keys[label] = self.session.generate_key(
            KeyType.AES,
            KEY_BYTES * 8,
            label=label,
            id=hashlib.sha256(label.encode()).digest()[:16],
            store=True,
            template={
                Attribute.TOKEN: True,
                Attribute.PRIVATE: True,
                Attribute.SENSITIVE: True,
                Attribute.EXTRACTABLE: False,
                Attribute.ENCRYPT: True,
                Attribute.DECRYPT: True,
                Attribute.SIGN: True,  # AES-CMAC, for the keys ``Hsm.derive`` makes
                Attribute.VERIFY: True,
                Attribute.WRAP: False,
                Attribute.UNWRAP: False,
                Attribute.DERIVE: False,
            },
        )

    def destroy(self, label: str) -> bool:
        key = self.key(label, fresh=True)
        if key is None:
            return False
        key.destroy()
        self._keys.pop(label, None)
        return True

    def labels(self, prefix: str) -> list[str]:
        from pkcs11 import Attribute, ObjectClass

        found = self.session.get_objects({Attribute.CLASS: ObjectClass.SECRET_KEY})
        labels = (str(o[Attribute.LABEL]) for o in found)
        return sorted(label for label in labels if label.startswith(prefix))

    def crypt(self, label: str, how: str, nonce: bytes, data: bytes, aad: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.exceptions import ObjectHandleInvalid, PKCS11Error
        from pkcs11.mechanisms import GCMParams

        key = self._must(label)
        try:
            return bytes(
                getattr(key, how)(
                    data, mechanism=Mechanism.AES_GCM, mechanism_param=GCMParams(nonce, aad)
                )
            )
        except ObjectHandleInvalid:
            raise _Stale() from None
        except PKCS11Error:
            # SoftHSM says CKR_GENERAL_ERROR for a bad tag too: a refusal is the data's
            # fault only if the key is still there, found afresh.
            if how == "decrypt" and self.key(label, fresh=True) is not None:
                raise _Refused() from None
            raise

    def cmac(self, label: str, data: bytes) -> bytes:
        from pkcs11 import Mechanism
        from pkcs11.exceptions import ObjectHandleInvalid

        try:
            return bytes(self._must(label).sign(data, mechanism=Mechanism.AES_CMAC))
        except ObjectHandleInvalid:
            raise _Stale() from None


class HsmSealer:
    """``Sealer``'s recipe with the key in the HSM: the same bytes, the same AAD."""

    __slots__ = ("hsm", "label")

    def __init__(self, hsm: Hsm, label: str) -> None:
        self.hsm, self.label = hsm, label

    def seal(self, plaintext: bytes, *context: bytes | str) -> bytes:
        nonce = os.urandom(NONCE_BYTES)
        return nonce + self.hsm.encrypt(self.label, nonce, plaintext, _aad(context))

    def open(self, sealed: bytes, *context: bytes | str) -> bytes:
        if len(sealed) < OVERHEAD:
            raise SealError("sealed value too short")
        return self.hsm.decrypt(
            self.label, sealed[:NONCE_BYTES], sealed[NONCE_BYTES:], _aad(context)
        )


# ---- the process's HSM ---------------------------------------------------------------------

_current: Hsm | None = None


def configure(config: HsmConfig | None) -> Hsm | None:
    """Make ``config`` the process's HSM (None: none); the one before it is closed."""
    global _current
    if _current is not None:
        _current.close()
    _current = Hsm(config) if config is not None else None
    return _current


def current() -> Hsm:
    """The process's HSM, configured from ``VAULT_HSM_*`` on first use if need be;
    ``HsmUnavailableError`` if there is none."""
    if _current is None and os.environ.get("VAULT_HSM_LIB"):
        configure(HsmConfig.from_settings({}, "the environment"))
    if _current is None:
        raise HsmUnavailableError(
            'no HSM is configured (seal "pkcs11" in the server\'s configuration, or '
            "VAULT_HSM_LIB and its companions)"
        )
    return _current


def configured() -> bool:
    """Whether this process has an HSM (or the environment names one)."""
    return _current is not None or bool(os.environ.get("VAULT_HSM_LIB"))


@contextlib.contextmanager
def using(config: HsmConfig | None) -> Iterator[Hsm | None]:
    """The process's HSM for a while (tests, tools)."""
    hsm = configure(config)
    try:
        yield hsm
    finally:
        configure(None)
