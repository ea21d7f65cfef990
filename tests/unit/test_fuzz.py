"""Property-based fuzzing of what a hostile bucket controls: object metadata and keys.

The metadata decoder must turn anything into sane attributes with at most one warning
per header; the key <-> path mapping must give every valid name back unchanged and
reject, never mangle, the rest. Keys with a newline are covered here only: moto's
server cannot store them (PutObject answers 404), so the mount tests cannot create them.
"""

from __future__ import annotations

import os
import stat

from hypothesis import given, settings
from hypothesis import strategies as st

from s3mount.meta import (
    FOLDER_SUFFIX,
    MAX_NAME_BYTES,
    Attr,
    decode_attr,
    decode_xattrs,
    encode_metadata,
    skip_reason,
    split_key,
    valid_name,
)

LM = 1_600_000_000 * 10**9
DEF_UID, DEF_GID = 1000, 1001
VALID_TYPES = {stat.S_IFREG, stat.S_IFDIR, stat.S_IFLNK, stat.S_IFIFO, stat.S_IFCHR,
               stat.S_IFBLK, stat.S_IFSOCK}
# Every header decode_attr reads, in the cases other tools and servers send them.
HEADERS = ["mode", "permissions", "goog-reserved-posix-mode", "uid", "owner",
           "goog-reserved-posix-uid", "gid", "group", "goog-reserved-posix-gid", "mtime",
           "goog-reserved-file-mtime", "ctime", "atime", "rdev", "xattr"]
HEADER_NAMES = st.sampled_from(HEADERS + [h.upper() for h in HEADERS] + ["Mode", "Uid"])
ANY_TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
HUGE_INTS = st.integers(min_value=-(10**40), max_value=10**40)
GARBAGE_VALUES = st.one_of(
    ANY_TEXT,
    HUGE_INTS.map(str), HUGE_INTS.map(oct), HUGE_INTS.map(hex),
    st.floats(allow_nan=True, allow_infinity=True).map(str),  # "1e+99", "nan", "-inf"
    st.sampled_from(["abc", "99999999999", "-1", "1e99", "0x", "08", "", " ", "\n", "\0",
                     "0777777777777777777777", "+-1", "1.2.3", "١٢٣"]),  # Arabic digits
    st.integers(0, 20_000).map(lambda n: "7" * n),  # huge numbers, as text
    st.integers(0, 3000).map(lambda n: '{"a":"' + "QQ==" * n + '"}'),
    st.integers(0, 500).map(lambda n: "{" + ",".join(["junk"] * n) + "}"),  # huge, malformed
)
KEYS = st.one_of(ANY_TEXT, st.sampled_from(["d/", "d_$folder$", "/", "", "a//b", "x\ny"]))


@settings(max_examples=300, deadline=None)
@given(key=KEYS, content_type=st.none() | ANY_TEXT,
       metadata=st.dictionaries(HEADER_NAMES | ANY_TEXT, GARBAGE_VALUES, max_size=10),
       size=st.integers(0, 2**63 - 1))
def test_decoding_any_metadata_never_raises_and_is_sane(
        key: str, content_type: str | None, metadata: dict[str, str], size: int) -> None:
    warnings: list[str] = []
    attr = decode_attr(key, size=size, content_type=content_type, last_modified_ns=LM,
                       metadata=metadata, default_uid=DEF_UID, default_gid=DEF_GID,
                       warn=warnings.append)
    xattrs = decode_xattrs(metadata.get("xattr"), warnings.append)

    assert stat.S_IFMT(attr.mode) in VALID_TYPES
    assert 0 <= attr.mode <= 0o177777
    assert 0 <= attr.uid < 2**32 - 1 and 0 <= attr.gid < 2**32 - 1
    assert all(-(2**63) <= ns < 2**63 for ns in (attr.mtime_ns, attr.ctime_ns, attr.atime_ns))
    assert 0 <= attr.rdev < 2**32
    assert attr.rdev == 0 or stat.S_IFMT(attr.mode) in (stat.S_IFCHR, stat.S_IFBLK)
    if key.endswith(("/", FOLDER_SUFFIX)):
        assert stat.S_ISDIR(attr.mode)
    assert all(name and isinstance(value, bytes) for name, value in xattrs.items())
    # One bad object must not flood the log: one line per warning, each of bounded
    # length, and at most one per header (plus one about the file type).
    assert all("\n" not in w and len(w) < len(repr(key)) + 200 for w in warnings)
    assert len(warnings) <= len(metadata) + 1


@settings(deadline=None)
@given(st.integers(2, 5000))
def test_a_huge_malformed_xattr_header_gives_one_warning(pairs: int) -> None:
    header = "{" + ",".join(f'"n{i}":"!!"' for i in range(pairs)) + "}"
    warnings: list[str] = []
    assert decode_xattrs(header, warnings.append) == {}
    assert len(warnings) == 1
    assert f"{pairs} malformed" in warnings[0]


IDS = st.integers(0, 2**32 - 2)
TIMES = st.integers(-(2**63), 2**63 - 1)
TYPES = st.sampled_from(sorted(VALID_TYPES))


@st.composite
def attrs(draw: st.DrawFn) -> tuple[str, Attr]:
    """An object key and the attributes s3mount could store for it."""
    ftype = draw(TYPES)
    key = "some/dir/" if ftype == stat.S_IFDIR else "some/file"
    return key, Attr(
        mode=ftype | draw(st.integers(0, 0o7777)),
        uid=draw(IDS), gid=draw(IDS),
        size=4096 if ftype == stat.S_IFDIR else draw(st.integers(0, 2**63 - 1)),
        mtime_ns=draw(TIMES), ctime_ns=draw(TIMES), atime_ns=draw(TIMES),
        rdev=draw(st.integers(0, 2**32 - 1)) if ftype in (stat.S_IFCHR, stat.S_IFBLK) else 0,
    )


XATTR_NAMES = st.text(min_size=1, max_size=20).filter(lambda n: "," not in n and '"' not in n)


@given(attrs(), st.dictionaries(XATTR_NAMES, st.binary(max_size=40), max_size=4))
def test_encode_then_decode_round_trips(key_attr: tuple[str, Attr],
                                        xattrs: dict[str, bytes]) -> None:
    key, attr = key_attr
    metadata = encode_metadata(attr, xattrs)
    warnings: list[str] = []
    decoded = decode_attr(key, size=attr.size, content_type="application/octet-stream",
                          last_modified_ns=LM, metadata=metadata, default_uid=DEF_UID,
                          default_gid=DEF_GID, warn=warnings.append)
    assert decoded == attr
    assert decode_xattrs(metadata.get("xattr"), warnings.append) == xattrs
    assert warnings == []


# --- the key <-> path mapping -----------------------------------------------------------

# Names as the kernel hands them over: any bytes but '/' and NUL, decoded as the
# adapter does (os.fsdecode: UTF-8 with surrogateescape).
KERNEL_NAMES = st.binary(min_size=1, max_size=300).filter(
    lambda b: b"/" not in b and b"\0" not in b).map(os.fsdecode)
ODD_NAMES = st.sampled_from(
    ["a b", " ", "%", "%41", "+", "a+b", "#", "?", "\\", "a\nb", "\r", "\t", "\x01\x7f",
     "\u00e9", "\ufffd", "\U0001f600", "x" * MAX_NAME_BYTES, "\u00e9" * 127, "...",
     "a_$folder$x", "-", "~"])
NAMES = st.one_of(ODD_NAMES, KERNEL_NAMES, st.text(min_size=1, max_size=60))


def key_of(prefix: str, components: list[str], *, directory: bool = False) -> str:
    """The key of a path, as the filesystem forms it: prefix + path (+ '/' for a marker)."""
    return prefix + "/".join(components) + ("/" if directory else "")


def path_of(prefix: str, key: str) -> list[str] | None:
    """The path a listing finds for ``key``, one directory level at a time, as the
    filesystem walks it; None if some level hides it."""
    components: list[str] = []
    rest = key[len(prefix):]
    while "/" in rest.rstrip("/"):
        head, _, rest = rest.partition("/")
        found = split_key(prefix, prefix + head + "/")
        if found is None:
            return None
        components.append(found[0])
        prefix += head + "/"
    found = split_key(prefix, prefix + rest)
    if found is None:
        return None
    components.append(found[0])
    return components


PREFIXES = st.sampled_from(["", "pre/", "a b/c%d/"])


@given(PREFIXES, st.lists(NAMES, min_size=1, max_size=4), st.booleans())
def test_valid_paths_round_trip_and_invalid_ones_are_rejected(
        prefix: str, components: list[str], directory: bool) -> None:
    key = key_of(prefix, components, directory=directory)
    if all(valid_name(c) for c in components):
        # A valid name is storable: S3 keys are UTF-8.
        key.encode("utf-8")
        if components[-1].endswith(FOLDER_SUFFIX) and not directory:
            return  # an old-style directory marker, not a file of that name
        assert path_of(prefix, key) == components
    elif any("/" in c for c in components):
        # A '/' inside a name makes the key of another path (S3 keys have no
        # other separator): whatever path it shows must be stored under that key.
        found = path_of(prefix, key)
        if found is not None:
            assert key_of(prefix, found, directory=key.endswith("/")) == key
    else:
        assert path_of(prefix, key) is None


@given(PREFIXES, st.text(st.characters(exclude_categories=()), max_size=80))
def test_listed_keys_are_never_mangled(prefix: str, rest: str) -> None:
    """Whatever the bucket holds, a name the listing shows is the key's own text."""
    found = split_key(prefix, prefix + rest)
    if found is None:
        return
    name, marker = found
    assert valid_name(name)
    assert prefix + name + ("/" if rest.endswith("/") else FOLDER_SUFFIX if marker else "") \
        == prefix + rest


@given(KERNEL_NAMES)
def test_names_that_are_not_utf8_are_rejected(name: str) -> None:
    try:
        raw = name.encode("utf-8")
    except UnicodeEncodeError:
        assert skip_reason(name) == "name is not valid UTF-8"
    else:
        assert valid_name(name) is (len(raw) <= MAX_NAME_BYTES and name not in (".", ".."))


def test_newline_and_control_characters_are_valid_names() -> None:
    # moto cannot store "a\nb" (see the module docstring); S3 and the mount can.
    for name in ("a\nb", "\r", "\x01", "\x7f", "tab\there"):
        assert valid_name(name)
        assert path_of("", key_of("", ["dir", name])) == ["dir", name]
