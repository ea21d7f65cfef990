"""Tests of s3mount.mime against s3fs-format.md §2.6 (Content-Type choice)."""

from __future__ import annotations

from pathlib import Path

import pytest

from s3mount.mime import DEFAULT, DIRECTORY, MimeTypes

MIME_TYPES = """\
# a comment line: text/html html
text/plain\t\t\t\ttxt asc
image/jpeg jpeg jpg jpe

application/x-csh csh
text/x-csh csh
   # indented comment: text/html htm
application/gzip gz # trailing comment: text/html shtml
application/x-dotted bashrc
text/x-upper TXT2
type/without-extensions
"""


@pytest.fixture
def mime(tmp_path: Path) -> MimeTypes:
    path = tmp_path / "mime.types"
    path.write_text(MIME_TYPES)
    return MimeTypes.load(str(path))


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        # test_content_type of s3fs's suite
        ("test.txt", "text/plain"),
        ("test.jpg", "image/jpeg"),
        ("test.bin", DEFAULT),
        ("test_dir/", DIRECTORY),
        # directories win over everything
        ("a.txt/", DIRECTORY),
        ("/", DIRECTORY),
        # paths and keys alike: the last component decides
        ("/mnt/dir/test.txt", "text/plain"),
        ("dir/sub/photo.jpeg", "image/jpeg"),
        ("a.txt/c", DEFAULT),  # the dot is in a directory component only
        ("a.b/c", DEFAULT),
        ("a.txt/c.unknown", DEFAULT),  # no second extension within "c.unknown"
        ("noext", DEFAULT),
        ("", DEFAULT),
        ("trailing.", DEFAULT),
        # the second-to-last extension is the fallback, never the preferred one
        ("x.txt.unknown", "text/plain"),
        ("x.jpg.txt", "text/plain"),
        ("x.txt.gz", "application/gzip"),
        ("x.unknown.txt.unknown", "text/plain"),
        ("x.txt.unknown.unknown", DEFAULT),  # only one step back
        ("x..unknown", DEFAULT),
        # case-sensitive, as s3fs
        ("X.TXT", DEFAULT),
        ("x.Txt", DEFAULT),
        ("x.TXT2", "text/x-upper"),
        ("x.txt2", DEFAULT),
        # a leading dot is an extension dot, as in s3fs
        (".bashrc", "application/x-dotted"),
        (".txt", "text/plain"),
        ("dir/.bashrc", "application/x-dotted"),
        (".profile", DEFAULT),
        (".txt.unknown", "text/plain"),
        # duplicates: the later line wins, as in s3fs
        ("run.csh", "text/x-csh"),
        # comments and lines without extensions add nothing
        ("page.html", DEFAULT),
        ("page.htm", DEFAULT),
        ("page.shtml", DEFAULT),
        ("x.#", DEFAULT),
        ("x.comment", DEFAULT),
        ("x.type/without-extensions", DEFAULT),
        ("x.asc", "text/plain"),
        ("x.jpe", "image/jpeg"),
    ],
)
def test_content_type(mime: MimeTypes, name: str, expected: str) -> None:
    assert mime.content_type(name) == expected


def test_constants() -> None:
    assert DIRECTORY == "application/x-directory"
    assert DEFAULT == "application/octet-stream"


def test_only_ascii_whitespace_separates_words(tmp_path: Path) -> None:
    path = tmp_path / "mime.types"
    path.write_text("text/plain txt\u00a0nbsp\r\nimage/png\vpng\fpng2\n")
    mime = MimeTypes.load(str(path))
    assert mime.content_type("x.txt\u00a0nbsp") == "text/plain"
    assert mime.content_type("x.txt") == DEFAULT
    assert mime.content_type("x.png") == "image/png"
    assert mime.content_type("x.png2") == "image/png"


def test_non_utf8_file_is_still_loaded(tmp_path: Path) -> None:
    path = tmp_path / "mime.types"
    path.write_bytes(b"text/x-latin1 caf\xe9\ntext/plain txt\n")
    mime = MimeTypes.load(str(path))
    assert mime.content_type("a.txt") == "text/plain"
    # the kernel hands over undecodable name bytes the same way
    assert mime.content_type("a.caf\udce9") == "text/x-latin1"


def test_empty_file_knows_nothing(tmp_path: Path) -> None:
    path = tmp_path / "mime.types"
    path.write_text("")
    mime = MimeTypes.load(str(path))
    assert mime.content_type("a.txt") == DEFAULT
    assert mime.content_type("d/") == DIRECTORY


def test_default_table_knows_txt() -> None:
    mime = MimeTypes.load()
    assert mime.content_type("a.txt") == "text/plain"
    assert mime.content_type("a.unknown-extension-xyz") == DEFAULT


def test_python_table_is_used_without_etc_mime_types(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setattr("s3mount.mime.SYSTEM_MIME_TYPES", str(tmp_path / "absent"))
    mime = MimeTypes.load()
    assert mime.content_type("a.txt") == "text/plain"
    # the standard entry beats Python's non-standard image/jpg
    assert mime.content_type("a.jpg") == "image/jpeg"
    # a common_types-only entry is included
    assert mime.content_type("a.rtf") == "application/rtf"
    assert mime.content_type("a.TXT") == DEFAULT


def test_unreadable_existing_default_file_raises(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # a directory exists but cannot be read as a file
    monkeypatch.setattr("s3mount.mime.SYSTEM_MIME_TYPES", str(tmp_path))
    with pytest.raises(OSError):
        MimeTypes.load()


def test_missing_explicit_file_raises() -> None:
    with pytest.raises(OSError):
        MimeTypes.load("/nonexistent")


def test_explicit_directory_raises(tmp_path: Path) -> None:
    with pytest.raises(OSError):
        MimeTypes.load(str(tmp_path))


def test_extension_never_reaches_into_a_directory(tmp_path: Path) -> None:
    # Only a table with a '/' in an extension tells this apart from s3fs's whole-path
    # search, which would answer text/x-odd here.
    path = tmp_path / "mime.types"
    path.write_text("text/x-odd txt/c\n")
    assert MimeTypes.load(str(path)).content_type("a.txt/c") == DEFAULT
