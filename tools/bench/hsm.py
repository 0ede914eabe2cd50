"""The HSM's figures: ``python -m tools.bench.hsm``.

Against a SoftHSM2 token of its own (``tools.bench.softhsm``), it prints, as medians:
the time to seal and to open one 100-byte value through the HSM beside the software
path (``Sealer``, AES-GCM in ``cryptography``) in the same run; a write and an audited read
through ``Core.handle`` on a ``pkcs11`` mount beside a ``generic`` one; and a server's
start-to-unsealed time with auto-unseal (``seal "pkcs11"``) beside the same server with
Shamir's seal unsealed by one ``sys/unseal`` call, and OpenBao 2.7.2 (raft) likewise.
"""

from __future__ import annotations

import contextlib
import functools
import http.client
import os
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from statistics import median

import msgpack

from backends import Request
from eventstore import Sealer, hsm, new_key
from tools.bench import open_writer
from tools.bench.server import Server, bao_executable, bao_version, free_port, start_bao
from tools.bench.softhsm import SoftHsm

VAULT = Path(sys.executable).parent / "vault"
VALUES = 2000  # per round
ROUNDS = 7
REQUESTS = 300
STARTS = 5
VALUE = msgpack.packb({"password": "x" * 88})  # 100 bytes packed
CONTEXT = ("0123456789abcdef", "value", "app/db")


def per_value(work: Callable[[], object], count: int = VALUES) -> float:
    """Median seconds per call of ``work`` over ``ROUNDS`` rounds of ``count``."""
    rounds = []
    for _ in range(ROUNDS):
        start = time.perf_counter()
        for _ in range(count):
            work()
        rounds.append((time.perf_counter() - start) / count)
    return median(rounds)


def sealing(token: SoftHsm) -> None:
    software = Sealer(new_key())
    sealed = software.seal(VALUE, *CONTEXT)
    soft_seal = per_value(lambda: software.seal(VALUE, *CONTEXT))
    soft_open = per_value(lambda: software.open(sealed, *CONTEXT))
    with hsm.using(token.config()) as device:
        assert device is not None
        device.generate("bench-value-key")
        through = device.sealer("bench-value-key")
        sealed = through.seal(VALUE, *CONTEXT)
        hsm_seal = per_value(lambda: through.seal(VALUE, *CONTEXT))
        hsm_open = per_value(lambda: through.open(sealed, *CONTEXT))
    print(f"one 100-byte value, medians of {ROUNDS} rounds of {VALUES}:")
    print(
        f"  software (AES-GCM, cryptography): seal {us(soft_seal)}, open {us(soft_open)}\n"
        f"  through SoftHSM2 (CKM_AES_GCM):   seal {us(hsm_seal)} ({hsm_seal / soft_seal:.0f}x), "
        f"open {us(hsm_open)} ({hsm_open / soft_open:.0f}x)"
    )


def requests(home: Path, token: SoftHsm) -> None:
    with hsm.using(token.config()):
        core = open_writer(home / "inproc", new_key())
        try:
            figures = {}
            for kind in ("generic", "pkcs11"):
                core.handle(Request("write", f"sys/mounts/{kind}-m", {"type": kind}))
                data = {"password": "x" * 88}
                write = Request("write", f"{kind}-m/app/db", data)
                read = Request("read", f"{kind}-m/app/db")
                figures[kind] = (
                    per_value(functools.partial(core.handle, write), REQUESTS),
                    per_value(functools.partial(core.handle, read), REQUESTS),
                )
        finally:
            core.store.close()
    (gw, gr), (hw, hr) = figures["generic"], figures["pkcs11"]
    print(f"Core.handle, fsync included, medians of {ROUNDS} rounds of {REQUESTS}:")
    print(f"  generic mount: write {us(gw)}, audited read {us(gr)}")
    print(
        f"  pkcs11 mount:  write {us(hw)} ({hw / gw:.2f}x), audited read {us(hr)} ({hr / gr:.2f}x)"
    )


def starts(home: Path, token: SoftHsm) -> None:
    """Process start to ``sys/health`` 200, with one store of a few values each time."""
    auto = _vaultlog(home / "auto", token.seal_block())
    shamir = _vaultlog(home / "shamir", "")
    print(f"start to unsealed (process start to sys/health 200), medians of {STARTS}:")
    try:
        key = _initialise(auto, shamir)
        auto_times = [_start_to_unsealed(auto, "") for _ in range(STARTS)]
        shamir_times = [_start_to_unsealed(shamir, key) for _ in range(STARTS)]
    finally:
        auto.stop()
        shamir.stop()
    a, s = median(auto_times), median(shamir_times)
    print(f'  vaultlog, seal "pkcs11" (auto-unseal):         {ms(a)}')
    print(f"  vaultlog, Shamir, one sys/unseal call:         {ms(s)} ({a / s:.2f}x)")
    bao = bao_executable()
    if bao is None:
        print("  OpenBao: not installed")
        return
    server = start_bao(home, bao)  # raft, initialised and unsealed once
    server.stop()
    try:
        times = [_start_to_unsealed(server, server.unseal_key) for _ in range(STARTS)]
    finally:
        server.stop()
    b = median(times)
    print(f"  {bao_version()}, raft, Shamir, one call:     {ms(b)} (vaultlog auto {a / b:.2f}x)")


def _vaultlog(home: Path, seal: str) -> Server:
    port = free_port()
    (home / "data").mkdir(parents=True)
    config = home / "config.hcl"
    config.write_text(
        f'storage "file" {{ path = "{home / "data"}" }}\n'
        f'listener "tcp" {{\n  address = "127.0.0.1:{port}"\n  tls_disable = 1\n}}\n{seal}'
    )
    return Server("vaultlog", [str(VAULT), "server", f"-config={config}"], home, port)


def _initialise(auto: Server, shamir: Server) -> str:
    """Init both servers, write a few values, stop them; the Shamir one's key."""
    key = ""
    for server in (auto, shamir):
        server.start()
        server.wait_for((501,))
        shape = {"secret_shares": 1, "secret_threshold": 1}
        answer = server.must(
            "PUT", "sys/init", {**shape, "recovery_shares": 1, "recovery_threshold": 1}
        )
        if answer["keys_base64"]:
            key = answer["keys_base64"][0]
            server.must("PUT", "sys/unseal", {"key": key})
        server.token = answer["root_token"]
        server.wait_for((200,))
        kind = "pkcs11" if server is auto else "generic"
        server.must("POST", "sys/mounts/m", {"type": kind})
        for i in range(100):
            server.must("PUT", f"m/value-{i}", {"password": "x" * 88})
        server.stop()
    return key


def _start_to_unsealed(server: Server, key: str) -> float:
    """Seconds from starting the process to ``sys/health`` 200; with ``key``, unsealed by
    one ``sys/unseal`` call as soon as it answers."""
    started = time.perf_counter()
    server.start()
    try:
        unsealed = False
        while True:
            server.check_alive()
            status = _health(server.port)
            if status == 200:
                return time.perf_counter() - started
            if status == 503 and key and not unsealed:
                server.must("PUT", "sys/unseal", {"key": key})
                unsealed = True
            if time.perf_counter() - started > 60:
                raise RuntimeError(f"{server.name} not unsealed after 60 s:\n{server.log_tail()}")
            time.sleep(0.005)
    finally:
        server.stop()


def _health(port: int) -> int | None:
    with contextlib.suppress(OSError):
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
        try:
            conn.request("GET", "/v1/sys/health")
            return conn.getresponse().status
        finally:
            conn.close()
    return None


def us(seconds: float) -> str:
    return f"{seconds * 1e6:.1f} µs"


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms"


def main() -> None:
    home = Path(tempfile.mkdtemp(prefix="vaultlog-bench-hsm-"))
    token = SoftHsm(home / "hsm")
    os.environ["SOFTHSM2_CONF"] = str(token.conf)  # for this process and the servers
    sealing(token)
    requests(home, token)
    starts(home, token)


if __name__ == "__main__":
    main()
