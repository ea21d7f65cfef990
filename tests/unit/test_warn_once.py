"""The filesystem's warnings about bad keys and metadata: once each, and bounded."""

from __future__ import annotations

import logging

import pytest

from s3mount import fs
from s3mount.fs import Filesystem, FsSettings


@pytest.fixture
def filesystem(tmp_path) -> Filesystem:
    # Warnings need no bucket: nothing here reaches the store, transfer or MIME table.
    return Filesystem(None, FsSettings(cache_dir=str(tmp_path)), None, None)  # type: ignore[arg-type]


def test_each_warning_once(filesystem, caplog):
    with caplog.at_level(logging.WARNING, logger="s3mount.fs"):
        for _ in range(3):
            filesystem._warn_once("skipping key 'a//'")
            filesystem._warn_once("skipping key 'b//'")
    assert caplog.messages == ["skipping key 'a//'", "skipping key 'b//'"]


def test_warnings_stop_after_the_limit(filesystem, caplog, monkeypatch):
    monkeypatch.setattr(fs, "MAX_WARNED", 5)
    with caplog.at_level(logging.WARNING, logger="s3mount.fs"):
        for _ in range(2):
            for i in range(20):
                filesystem._warn_once(f"problem {i}")
    assert caplog.messages == [*(f"problem {i}" for i in range(5)),
                               "more than 5 problems with keys or metadata; no more are logged"]
