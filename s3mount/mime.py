"""Content-Type of new objects, chosen from the name as s3fs does (s3fs-format.md §2.6)."""

from __future__ import annotations

import mimetypes
import re
from collections.abc import Mapping
from typing import Self

DIRECTORY = "application/x-directory"
DEFAULT = "application/octet-stream"
SYSTEM_MIME_TYPES = "/etc/mime.types"

# s3fs splits lines with C++ `>>`, i.e. at ASCII whitespace only; str.split() would also
# split at Unicode spaces.
_WORD_RE = re.compile(r"[^ \t\n\v\f\r]+")


def _parse(text: str) -> dict[str, str]:
    """The extension table of a mime.types file: "type/subtype ext1 ext2 ..." lines."""
    table: dict[str, str] = {}
    for line in text.split("\n"):
        words = _WORD_RE.findall(line)
        if not words or words[0].startswith("#"):
            continue
        for ext in words[1:]:
            # s3fs differs: it only knows comment lines starting with '#' in column 0, and
            # would take the words of an indented or trailing comment as extensions.
            if ext.startswith("#"):
                break
            # A later line overrides an earlier one, as in s3fs's map assignment. It
            # matters: Debian's file lists csh as application/x-csh, then text/x-csh.
            table[ext] = words[0]
    return table


def _python_table() -> dict[str, str]:
    # A fresh instance holds only Python's own table, whereas the module-level functions
    # also read whatever mime.types files this machine has.
    builtin = mimetypes.MimeTypes(filenames=())
    common, standard = builtin.types_map[False], builtin.types_map[True]
    # The standard entry beats the common one (image/jpeg over image/jpg for .jpg), as in
    # guess_type(strict=False).
    merged = {**common, **standard}
    return {ext.removeprefix("."): content_type for ext, content_type in merged.items()}


def _read(path: str) -> str:
    # surrogateescape: a stray non-UTF-8 byte must not make the whole table unusable.
    with open(path, encoding="utf-8", errors="surrogateescape") as f:
        return f.read()


class MimeTypes:
    """An extension → Content-Type table with s3fs's lookup rules."""

    def __init__(self, table: Mapping[str, str]) -> None:
        self._table = dict(table)

    @classmethod
    def load(cls, path: str | None = None) -> Self:
        """The table in ``path`` (the mime= option); without one, /etc/mime.types, or
        Python's built-in table when that file does not exist.

        Raises OSError when ``path`` (or an existing /etc/mime.types) cannot be read.
        """
        if path is not None:
            return cls(_parse(_read(path)))
        try:
            return cls(_parse(_read(SYSTEM_MIME_TYPES)))
        except FileNotFoundError:
            return cls(_python_table())

    def content_type(self, name: str) -> str:
        """Content-Type for the key or path ``name``.

        Extensions match case-sensitively. The last extension is looked up, then the one
        before it ("x.txt.unknown" is text/plain). A leading dot counts as an extension
        dot, as in s3fs: ".txt" is text/plain, ".bashrc" looks up "bashrc".
        """
        if name.endswith("/"):
            return DIRECTORY
        # s3fs searches the whole path for dots, but an "extension" that reaches into a
        # directory contains '/', which no real mime.types entry does: looking at the last
        # component only gives the same answers.
        stem, dot, ext = name.rpartition("/")[2].rpartition(".")
        if not dot:
            return DEFAULT
        found = self._table.get(ext)
        if found is None:
            _, dot, ext = stem.rpartition(".")
            if dot:
                found = self._table.get(ext)
        return DEFAULT if found is None else found
