"""Request ids are drawn ahead, many per system call: still random, never handed out twice,
in threads or in a forked child."""

from __future__ import annotations

import os
import re
import threading

from backends.request import Request, random_id


def test_ids_are_16_hex_digits_and_never_repeat() -> None:
    ids = [Request("read", "secret/x").request_id for _ in range(5000)]
    assert all(re.fullmatch(r"[0-9a-f]{16}", i) for i in ids)
    assert len(set(ids)) == len(ids)


def test_threads_never_get_the_same_id() -> None:
    found: list[list[str]] = [[] for _ in range(8)]

    def draw(n: int) -> None:
        found[n].extend(random_id() for _ in range(3000))

    threads = [threading.Thread(target=draw, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    every = [i for ids in found for i in ids]
    assert len(set(every)) == len(every) == 8 * 3000


def test_a_forked_child_hands_out_none_of_its_parents_ids() -> None:
    random_id()  # the parent has ids drawn ahead, which a child must not reuse
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: its next ids, then out without running pytest's teardown
        try:
            os.write(write, " ".join(random_id() for _ in range(100)).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        child = set(pipe.read().split())
    os.waitpid(pid, 0)
    parent = {random_id() for _ in range(100)}
    assert len(child) == 100 and not child & parent
