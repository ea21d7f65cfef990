"""The filesystem's warnings about bad keys and metadata: once each, and bounded."""

from __future__ import annotations

import logging

from s3mount.fs import OnceWarnings

log = logging.getLogger("s3mount.test_warn_once")


def test_each_warning_once(caplog):
    warnings = OnceWarnings(log)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(3):
            warnings.warn("skipping key 'a//'")
            warnings.warn("skipping key 'b//'")
    assert caplog.messages == ["skipping key 'a//'", "skipping key 'b//'"]


def test_warnings_stop_after_the_limit(caplog):
    warnings = OnceWarnings(log, limit=5)
    with caplog.at_level(logging.WARNING, logger=log.name):
        for _ in range(2):
            for i in range(20):
                warnings.warn(f"problem {i}")
    assert caplog.messages == [*(f"problem {i}" for i in range(5)),
                               "more than 5 problems with keys or metadata; no more are logged"]
