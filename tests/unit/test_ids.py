"""`new_id`: uuid4-shaped ids from a page of kernel randomness, never repeated, not across forks."""

from __future__ import annotations

import os
import threading
import uuid

import pytest

from clipmod.models.base import new_id


def test_ids_are_version_4_uuids_and_never_repeat_across_refills_and_threads() -> None:
    seen: list[str] = []

    def draw() -> None:
        seen.extend(new_id() for _ in range(1000))  # several pages of 256

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(seen)) == len(seen) == 4000
    for value in seen[:50]:
        parsed = uuid.UUID(hex=value)
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122 and parsed.hex == value


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs fork")
def test_a_forked_child_draws_its_own_ids() -> None:
    new_id()  # the parent now holds the rest of a page
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:
        try:
            os.write(write, "".join(new_id() for _ in range(10)).encode())
        finally:
            os._exit(0)
    os.close(write)
    os.waitpid(pid, 0)
    with os.fdopen(read) as pipe:
        child = pipe.read()
    parent = "".join(new_id() for _ in range(10))
    assert len(child) == len(parent) == 320
    assert {child[i : i + 32] for i in range(0, 320, 32)}.isdisjoint(
        {parent[i : i + 32] for i in range(0, 320, 32)}
    )
