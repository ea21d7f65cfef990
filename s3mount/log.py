"""Logging set-up: stderr in the foreground, syslog when detached, and a filter
that keeps secrets out of every record at every level.
"""

from __future__ import annotations

import logging
import logging.handlers
import os
import re
import sys
from collections.abc import Iterable

_LEVELS = {
    "critical": logging.CRITICAL,
    "error": logging.ERROR,
    "warning": logging.WARNING,
    "info": logging.INFO,
    "debug": logging.DEBUG,
}

# What botocore's debug log can show of a signed request.
_SIGNATURE = re.compile(
    r"(Signature=|Credential=|X-Amz-Security-Token['\"]?[:=]\s*['\"b]*|"
    r"x-amz-security-token['\"]?[:=]\s*['\"b]*|"
    r"x-amz-server-side-encryption-customer-key['\"]?[:=]\s*['\"b]*)[^,\s'\"]+",
    re.IGNORECASE,
)
REDACTED = "[redacted]"


class RedactingFilter(logging.Filter):
    """Replaces known secrets and signature material in the formatted message."""

    def __init__(self) -> None:
        super().__init__()
        self._secrets: set[str] = set()

    def add_secrets(self, secrets: Iterable[str | None]) -> None:
        self._secrets.update(s for s in secrets if s and len(s) >= 4)

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = self._clean(message)
        exc_text = self._clean(record.exc_text) if record.exc_text else record.exc_text
        if cleaned != message or exc_text != record.exc_text:
            record.msg, record.args, record.exc_text = cleaned, None, exc_text
        return True

    def _clean(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, REDACTED)
        return _SIGNATURE.sub(lambda m: m.group(1) + REDACTED, text)


redactor = RedactingFilter()


class ReopenableFileHandler(logging.FileHandler):
    """A log file that logrotate can move away: reopen() (on SIGHUP) starts a new one."""

    def reopen(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self.stream:
                self.stream.close()
            self.stream = self._open()


def setup_logging(level: str, *, to_stderr: bool, logfile: str | None = None,
                  timestamps: bool = True, instance: str | None = None) -> None:
    """Send records to ``logfile`` if given, else stderr (foreground) or syslog; lines
    to a file or stderr start with the time unless ``timestamps`` is off
    (no_time_stamp_msg: journald and other collectors add their own); every
    message starts with ``[instance]`` when given (instance_name)."""
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
        old.close()
    time = "%(asctime)s " if timestamps else ""
    message = f"[{instance}] %(message)s" if instance else "%(message)s"
    if logfile:
        handler: logging.Handler = ReopenableFileHandler(logfile, encoding="utf-8")
        handler.setFormatter(logging.Formatter(
            f"{time}s3mount[{os.getpid()}] %(levelname)s %(name)s: {message}"))
    elif to_stderr:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter(f"{time}%(levelname)s %(name)s: {message}"))
    else:
        address = "/dev/log" if os.path.exists("/dev/log") else ("localhost", 514)
        handler = logging.handlers.SysLogHandler(
            address=address, facility=logging.handlers.SysLogHandler.LOG_DAEMON)
        handler.setFormatter(logging.Formatter(f"s3mount[{os.getpid()}]: {message}"))
    handler.addFilter(redactor)
    root.addHandler(handler)
    root.setLevel(_LEVELS[level])
    if root.level > logging.DEBUG:
        # botocore and urllib3 are chatty at INFO; keep them for debug runs.
        for noisy in ("botocore", "urllib3"):
            logging.getLogger(noisy).setLevel(logging.WARNING)


def reopen_log_files() -> None:
    for handler in logging.getLogger().handlers:
        if isinstance(handler, ReopenableFileHandler):
            handler.reopen()
