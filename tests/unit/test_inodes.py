"""The inode table's bookkeeping: kernel lookup counts, renames, the LRU of
inodes readdir numbered without a lookup."""

from __future__ import annotations

from s3mount.inodes import ROOT_INODE, InodeTable


def test_forget_says_when_the_kernels_last_lookup_is_gone():
    table = InodeTable()
    ino = table.number("a", counted=True)
    assert table.number("a", counted=True) == ino
    assert table.forget(ino, 1) is False
    assert table.path(ino) == "a"
    assert table.forget(ino, 1) is True
    assert table.path(ino) is None and table.find("a") is None
    assert table.forget(ino, 1) is False
    assert table.forget(ROOT_INODE, 1) is False and table.path(ROOT_INODE) == ""


def test_move_renames_a_tree_and_keeps_the_numbers():
    table = InodeTable()
    d, f, other = (table.number(p, counted=True) for p in ("d", "d/f", "dx"))
    replaced = table.number("e/f", counted=True)
    table.move("d", "e")
    assert (table.path(d), table.path(f), table.path(other)) == ("e", "e/f", "dx")
    assert table.find("d/f") is None and table.find("e/f") == f
    assert table.path(replaced) is None  # the kernel still holds it, nameless


def test_numbers_are_never_reused():
    table = InodeTable()
    first = table.number("a", counted=True)
    table.forget(first, 1)
    assert table.number("a", counted=True) != first


def test_uncounted_entries_are_dropped_oldest_first():
    table = InodeTable(max_uncounted=2)
    a, b = table.number("a", counted=False), table.number("b", counted=False)
    held = table.number("h", counted=True)
    table.number("a", counted=False)  # used again: now the newest
    table.number("c", counted=False)
    assert table.path(b) is None and table.path(a) == "a" and table.path(held) == "h"
