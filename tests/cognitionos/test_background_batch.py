"""cognitionos.background_batch: items gathered in the process and written together, kept or
dropped when a write fails, bounded, and flushed by the batch's own thread."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path

from cognitionos.background_batch import BackgroundBatch


class Store:
    def __init__(self, refuse: set[int] | None = None, broken: bool = False) -> None:
        self.writes: list[list[int]] = []
        self.refuse, self.broken = refuse or set(), broken

    def write(self, items: list[int]) -> list[int]:
        if self.broken:
            raise ConnectionError("store down")
        self.writes.append([item for item in items if item not in self.refuse])
        return [item for item in items if item in self.refuse]


def _batch(store: Store, *, keep: bool, interval_s: float = 3600, max_pending: int = 100) -> BackgroundBatch[int]:
    return BackgroundBatch(
        "test-batch", write=store.write, interval_s=lambda: interval_s, keep_on_failure=keep, max_pending=max_pending
    )


def test_waiting_items_are_written_together_in_their_order() -> None:
    store = Store()
    batch = _batch(store, keep=True)
    for item in (3, 1, 2):
        batch.add(item)
    assert store.writes == []  # nothing before the flush
    assert batch.flush() == 3
    assert store.writes == [[3, 1, 2]]
    assert batch.flush() == 0 and store.writes == [[3, 1, 2]]  # nothing waiting: no write


def test_items_not_written_are_kept_for_the_next_flush_or_dropped() -> None:
    store = Store(refuse={2})
    kept = _batch(store, keep=True)
    for item in (1, 2, 3):
        kept.add(item)
    kept.flush()
    store.refuse.clear()
    kept.add(4)
    kept.flush()
    assert store.writes == [[1, 3], [2, 4]]  # 2 went with the next batch, ahead of what came later

    down = Store(broken=True)
    dropped = _batch(down, keep=False)
    dropped.add(1)
    assert dropped.flush() == 1
    down.broken = False
    assert dropped.flush() == 0 and down.writes == []  # a failed write of figures is not repeated


def test_at_most_max_pending_items_wait_the_oldest_go_first() -> None:
    store = Store()
    batch = _batch(store, keep=True, max_pending=3)
    for item in range(5):
        batch.add(item)
    batch.flush()
    assert store.writes == [[2, 3, 4]]


def test_the_batchs_thread_writes_on_its_own() -> None:
    store = Store()
    batch = _batch(store, keep=True, interval_s=0.05)
    batch.add(7)
    deadline = time.monotonic() + 5
    while not store.writes and time.monotonic() < deadline:
        time.sleep(0.01)
    assert store.writes == [[7]]


def test_a_forked_child_starts_empty_and_writes_only_its_own_items() -> None:
    store = Store()
    batch = _batch(store, keep=True)
    batch.add(1)  # the parent's, waiting
    reader, writer = os.pipe()
    child = os.fork()
    if child == 0:  # the child: its own item only
        batch.add(2)
        batch.flush()
        os.write(writer, repr(store.writes).encode())
        os._exit(0)
    os.close(writer)
    os.waitpid(child, 0)
    with os.fdopen(reader) as pipe:
        assert pipe.read() == "[[2]]"
    batch.flush()
    assert store.writes == [[1]]


def test_with_a_key_a_later_item_replaces_a_waiting_one_and_without_an_interval_no_thread_runs() -> None:
    latest: list[list[tuple[str, int]]] = []

    def write(items: list[tuple[str, int]]) -> list[tuple[str, int]]:
        latest.append(items)
        return []

    batch = BackgroundBatch("keyed", write=write, interval_s=lambda: 0, keep_on_failure=True, key=lambda item: item[0])
    for item in (("a", 1), ("b", 1), ("a", 2)):
        batch.add(item)
    time.sleep(0.05)
    assert latest == []  # interval 0: only the owner flushes
    assert batch.flush() == 2
    assert latest == [[("a", 2), ("b", 1)]]


def _child_adds(batch: BackgroundBatch[int]) -> None:
    batch.add(5)  # starts the batch's thread, which would write only an hour later


def test_a_worker_process_that_multiprocessing_forked_writes_what_waits_when_it_ends(tmp_path: Path) -> None:
    """Granian forks its web workers with multiprocessing, whose children end without atexit hooks:
    a cache hit's ledger row waiting in the batch was lost with every restart."""
    written = tmp_path / "written"

    def write(items: list[int]) -> list[int]:
        written.write_text(repr(items))
        return []

    batch = BackgroundBatch("forked", write=write, interval_s=lambda: 3600, keep_on_failure=True)
    child = multiprocessing.get_context("fork").Process(target=_child_adds, args=(batch,))
    child.start()
    child.join(10)
    assert child.exitcode == 0
    assert written.read_text() == "[5]"
