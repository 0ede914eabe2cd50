"""What authorisation adds to a request, in process: ``python -m tools.bench.authz``.

An audited read of ``secret/app/k`` through ``Core.serve`` on a store in memory (no disk),
by the root token, then by a token holding 100 policies of 20 paths each (one of which
grants the read), the two taking turns in rounds so a noisy machine slows them alike. The
figure is the median over rounds of each round's p50, and their difference.
"""

from __future__ import annotations

import statistics
import sys
import time

from backends import Core, Registry, Request
from backends.auth import TokenAuth
from backends.contract import Session
from backends.token import issue
from projections import Store
from projections.events import PolicyWritten

POLICIES, PATHS = 100, 20
ROUNDS, PER_ROUND = 7, 2000


def policy_text(i: int) -> str:
    """One of many policies: 20 paths of assorted shapes, on mounts no request uses."""
    rules = []
    for j in range(PATHS):
        shape = j % 4
        path = (
            f"team{i}/app{j}/config",
            f"team{i}/app{j}/*",
            f"team{i}/+/app{j}",
            f"shared/team{i}/{j}*",
        )[shape]
        rules.append(f'path "{path}" {{ capabilities = ["read", "list"] }}')
    if i == POLICIES - 1:
        rules[-1] = 'path "secret/app/*" { capabilities = ["read"] }'
    return "\n".join(rules)


def p50_of(core: Core, token: str, n: int) -> float:
    times = []
    for _ in range(n):
        request = Request("read", "secret/app/k", token=token)
        start = time.perf_counter_ns()
        core.serve(request)
        times.append(time.perf_counter_ns() - start)
    return statistics.median(times) / 1000  # microseconds


def main() -> int:
    registry = Registry()
    store = Store.in_memory()
    core = Core(store, registry, TokenAuth(registry))
    session = Session(store, Request("write", "sys/policy", actor="bench"), registry)
    names = [f"p{i}" for i in range(POLICIES)]
    for name, i in zip(names, range(POLICIES), strict=True):
        session.stage(PolicyWritten(actor="bench", request_id="b", name=name, rules=policy_text(i)))
    root = issue(session, policies=["root"], path="auth/token/root", display="root", ttl=0)
    many = issue(session, policies=names, path="auth/token/create", display="token", ttl=3600)
    session.commit()
    core.handle(Request("write", "secret/app/k", {"value": "v"}, token=root["client_token"]))
    rows: dict[str, list[float]] = {"root": [], "100 policies x 20 paths": []}
    for _ in range(ROUNDS):
        rows["root"].append(p50_of(core, root["client_token"], PER_ROUND))
        rows["100 policies x 20 paths"].append(p50_of(core, many["client_token"], PER_ROUND))
        store.flush()
    base = statistics.median(rows["root"])
    print("audited read through Core.serve, in memory, p50 per request (median of rounds)")
    for name, values in rows.items():
        value = statistics.median(values)
        print(f"  {name:<26} {value:8.1f} µs   {value / base:5.2f}x   +{value - base:.1f} µs")
    return 0


if __name__ == "__main__":
    sys.exit(main())
