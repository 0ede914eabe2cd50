"""Several `vault server` nodes on one PostgreSQL store, as the HA tests start them.

Each node is a real process with its own config (storage "postgresql" with ha_enabled, a
cache directory of its own, its api_addr) on a free port. ``start`` inits through the
first node, unseals every node with the one share, and waits until exactly one is active.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from tests.servers import DevServer, config_server, health_status


def postgres_node(
    home: Path, url: str, *, ha: bool = True, env: dict[str, str] | None = None
) -> DevServer:
    storage = (
        f'storage "postgresql" {{\n  connection_url = "{url}"\n'
        f'  ha_enabled = "{str(ha).lower()}"\n  cache_path = "{home / "cache"}"\n}}'
    )
    return config_server(home, storage=storage, api_addr=True, unseal=False, env=env)


@dataclass
class Cluster:
    nodes: list[DevServer]
    url: str = ""  # the database's
    keys: list[str] = field(default_factory=list, repr=False)
    token: str = field(default="", repr=False)

    @classmethod
    def of(cls, root: Path, url: str, count: int, env: dict[str, str] | None = None) -> Cluster:
        return cls([postgres_node(root / f"node{i}", url, env=env) for i in range(count)], url)

    def start(self) -> None:
        for node in self.nodes:
            node.start()
        answer = self.nodes[0].call("PUT", "sys/init", {"secret_shares": 1, "secret_threshold": 1})
        self.keys, self.token = answer["keys_base64"], answer["root_token"]
        for node in self.nodes:
            self.unseal(node)
        self.active()

    def unseal(self, node: DevServer) -> None:
        node.keys, node.token = self.keys, self.token
        node.call("PUT", "sys/unseal", {"key": self.keys[0]})

    def restart(self, node: DevServer) -> None:
        node.start()
        self.unseal(node)

    def active(self, timeout: float = 15.0, among: list[DevServer] | None = None) -> DevServer:
        """The one node answering health 200, once the others answer 429."""
        nodes = among if among is not None else [n for n in self.nodes if n.process]
        deadline = time.monotonic() + timeout
        while True:
            codes = [health_status(n.addr) for n in nodes]
            if codes.count(200) == 1 and all(c in (200, 429) for c in codes):
                return nodes[codes.index(200)]
            if time.monotonic() > deadline:
                logs = "\n".join(n.log(1500) for n in nodes)
                raise AssertionError(f"no single active node: health {codes}\n{logs}")
            time.sleep(0.05)

    def standbys(self) -> list[DevServer]:
        active = self.active()
        return [n for n in self.nodes if n is not active and n.process]

    def stop(self) -> None:
        for node in self.nodes:
            node.stop()
