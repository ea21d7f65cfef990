"""DirTimeUpdates bookkeeping: coalescing, discarding, flushing at close."""

from __future__ import annotations

import logging
import threading

import pytest

from s3mount.dir_times import DirTimeUpdates


def never_due() -> dict:
    # Nothing becomes due on its own during a test: close() flushes.
    return {"quiet": 3600.0, "longest": 3600.0}


def test_many_changes_to_one_directory_are_stored_once_with_the_latest_time() -> None:
    stored: list[tuple[str, int]] = []
    updates = DirTimeUpdates(lambda path, ns: stored.append((path, ns)), **never_due())
    for ns in range(1, 101):
        updates.touch("a", ns)
    updates.touch("b", 7)
    assert updates.pending() == ["a", "b"]
    updates.close()
    assert sorted(stored) == [("a", 100), ("b", 7)]


def test_discard_tree_drops_the_directory_and_everything_below() -> None:
    stored: list[str] = []
    updates = DirTimeUpdates(lambda path, ns: stored.append(path), **never_due())
    for path in ("x", "x/y", "x/y/z", "xy", "other"):
        updates.touch(path, 1)
    updates.discard_tree("x")
    updates.close()
    assert sorted(stored) == ["other", "xy"]


def test_a_failing_update_is_logged_and_the_others_still_happen(
        caplog: pytest.LogCaptureFixture) -> None:
    stored: list[str] = []

    def persist(path: str, ns: int) -> None:
        if path == "bad":
            raise OSError("refused")
        stored.append(path)

    updates = DirTimeUpdates(persist, **never_due())
    for path in ("bad", "good1", "good2"):
        updates.touch(path, 1)
    with caplog.at_level(logging.WARNING):
        updates.close()
    assert sorted(stored) == ["good1", "good2"]
    assert "could not store the times of directory /bad: refused" in caplog.text


def test_due_updates_are_stored_without_close() -> None:
    done = threading.Event()
    updates = DirTimeUpdates(lambda path, ns: done.set(), quiet=0.0, longest=0.0)
    updates.touch("d", 1)
    assert done.wait(30)
    assert updates.pending() == []
    updates.close()


def test_discard_drops_only_that_directory() -> None:
    stored: list[str] = []
    updates = DirTimeUpdates(lambda path, ns: stored.append(path), **never_due())
    for path in ("x", "x/y"):
        updates.touch(path, 1)
    updates.discard("x")
    updates.close()
    assert stored == ["x/y"]


def test_disabled_updates_store_nothing() -> None:
    stored: list[str] = []
    updates = DirTimeUpdates(lambda path, ns: stored.append(path), enabled=False,
                             **never_due())
    updates.touch("d", 1)
    assert updates.pending() == []
    updates.close()
    assert stored == []
