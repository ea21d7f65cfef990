"""Tests of s3mount.options: the -o table, parse_options, settings_from, help_rows.

Most tests are driven by OPTIONS itself, so an option added to the table is
tested (or makes a completeness test fail) without anyone remembering to.
Names and meanings are checked against s3fs-format.md §1 and §4.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import pytest

from s3mount.errors import UsageError
from s3mount.options import (
    GROUPS,
    OPTION_BY_NAME,
    OPTIONS,
    Option,
    Settings,
    Status,
    help_rows,
    not_available,
    parse_options,
    settings_from,
    split_option_strings,
)


def by_status(status: Status) -> list[Option]:
    return [option for option in OPTIONS if option.status is status]


SUPPORTED = by_status(Status.SUPPORTED)
PLANNED = by_status(Status.PLANNED)
UNSUPPORTED = by_status(Status.UNSUPPORTED)
IGNORED = by_status(Status.IGNORED)
SUPPORTED_FLAGS = [o for o in SUPPORTED if o.is_flag]
SUPPORTED_VALUES = [o for o in SUPPORTED if not o.is_flag]


def spellings(option: Option) -> list[str]:
    return [option.name, *option.aliases]


def all_spellings() -> list[str]:
    return [s for option in OPTIONS for s in (*spellings(option), *option.negations)]


def refused(option_string: str) -> str:
    """Parse one -o string that must be refused; return the one-line message."""
    with pytest.raises(UsageError) as info:
        parse_options([option_string])
    message = info.value.message
    assert info.value.exit_code == 2
    assert "\n" not in message
    assert message == str(info.value)
    return message


def quoted(text: str) -> str:
    return f"'{text}'"


# --------------------------------------------------------------------------
# The table itself


def test_table_is_not_empty_and_has_every_status() -> None:
    assert SUPPORTED and PLANNED and UNSUPPORTED and IGNORED
    assert len(OPTIONS) == len(OPTION_BY_NAME)


def test_no_spelling_is_defined_twice() -> None:
    names = all_spellings()
    duplicates = sorted({n for n in names if names.count(n) > 1})
    assert duplicates == []


@pytest.mark.parametrize("spelling", all_spellings())
def test_spelling_is_a_plain_word(spelling: str) -> None:
    assert spelling
    assert not spelling.startswith("x-")
    assert not re.search(r"[,=\s]", spelling)


@pytest.mark.parametrize("option", OPTIONS, ids=lambda o: o.name)
def test_option_is_consistent(option: Option) -> None:
    assert option.group in GROUPS
    assert OPTION_BY_NAME[option.name] is option
    if option.negations:
        assert option.is_flag, "only a flag can be negated"
    if option.is_flag:
        assert isinstance(option.default, bool)
    if option.status is Status.UNSUPPORTED:
        assert option.note, "an unsupported option must say why and what to do instead"
    if option.status in (Status.SUPPORTED, Status.IGNORED):
        assert option.help.strip(), "a user-visible option needs help text"


# s3fs's -o option names from s3fs-format.md §1 (the tables). Every one must
# be recognised: accepted, ignored, or refused with a reason, never "unknown".
S3FS_OPTION_NAMES = [
    "accessKeyId", "ahbe_conf", "allow_other", "bucket", "bucket_size", "check_cache_dir_exist",
    "cipher_suites", "compat_dir", "complement_stat", "connect_timeout", "credlib",
    "credlib_opts", "curldbg", "dbglevel", "default_acl", "del_cache", "disable_negative_cache",
    "disable_noobj_cache", "ecs", "enable_content_md5", "enable_negative_cache",
    "enable_noobj_cache", "enable_unsigned_payload", "endpoint", "ensure_diskfree", "f2",
    "fd_page_size", "free_space_ratio", "gid", "hard_remove", "host", "iam_role",
    "ibm_iam_auth", "ibm_iam_endpoint", "imdsv1only", "insecure_logging", "instance_name",
    "ipresolve", "list_object_max_keys", "listobjectsv2", "load_sse_c", "logfile",
    "max_dirty_data", "max_stat_cache_size", "max_thread_count", "mime", "mp_umask",
    "multipart_copy_size", "multipart_size", "multipart_threshold", "multireq_max",
    "no_check_certificate", "no_time_stamp_msg", "nocopyapi", "nodnscache", "nomixupload",
    "nomultipart", "norenameapi", "nosscache", "notsup_compat_dir", "noua", "noxmlns",
    "parallel_count", "passwd_file", "profile", "proxy", "public_bucket",
    "putheader_mp_threshold", "readwrite_timeout", "region", "requester_pays", "retries",
    "secretAccessKey", "servicepath", "set_check_cache_sigusr1", "sigv2", "sigv4",
    "singlepart_copy_limit", "ssl_client_cert", "ssl_verify_hostname", "stat_cache_expire",
    "stat_cache_interval_expire", "storage_class", "streamupload", "tmpdir", "uid", "umask",
    "update_parent_dir_stat", "use_cache", "use_path_request_style", "use_rrs",
    "use_session_token", "use_sse", "use_wtf8", "use_xattr", "auto", "noauto", "user", "nouser",
    "users", "_netdev", "nofail", "nonempty", "allow_root", "default_permissions", "ro", "rw",
    "dev", "nodev", "suid", "nosuid", "exec", "noexec", "atime", "noatime", "relatime",
]



@pytest.mark.parametrize(
    "name",
    [*S3FS_OPTION_NAMES, "proxy_cred_file"],
)
def test_every_s3fs_option_name_is_recognised(name: str) -> None:
    assert name in all_spellings()
    try:
        parse_options([name])
    except UsageError as exc:
        assert "unknown option" not in exc.message


# --------------------------------------------------------------------------
# SUPPORTED flags

FLAG_SPELLINGS = [(o.name, s) for o in SUPPORTED_FLAGS for s in spellings(o)]
TRUE_VALUES = [None, "1", "true", "TRUE", "yes", "on"]
FALSE_VALUES = ["0", "false", "False", "no", "off"]


def with_value(spelling: str, value: str | None) -> str:
    return spelling if value is None else f"{spelling}={value}"


@pytest.mark.parametrize("value", TRUE_VALUES)
@pytest.mark.parametrize(("name", "spelling"), FLAG_SPELLINGS)
def test_flag_true(name: str, spelling: str, value: str | None) -> None:
    assert parse_options([with_value(spelling, value)]) == {name: True}


@pytest.mark.parametrize("value", FALSE_VALUES)
@pytest.mark.parametrize(("name", "spelling"), FLAG_SPELLINGS)
def test_flag_false(name: str, spelling: str, value: str) -> None:
    assert parse_options([with_value(spelling, value)]) == {name: False}


@pytest.mark.parametrize("value", ["maybe", "2", "", "-1", "y"])
@pytest.mark.parametrize(("name", "spelling"), FLAG_SPELLINGS)
def test_flag_bad_value(name: str, spelling: str, value: str) -> None:
    message = refused(f"{spelling}={value}")
    assert quoted(spelling) in message
    assert quoted(value) in message


EXPECTED_NEGATIONS = {
    "rw": "ro",
    "nodev": "dev",
    "nosuid": "suid",
    "noexec": "exec",
    "noatime": "atime",
    "disable_negative_cache": "enable_negative_cache",
    "disable_noobj_cache": "enable_negative_cache",
    "notsup_compat_dir": "compat_dir",
}
TABLE_NEGATIONS = {n: o.name for o in OPTIONS for n in o.negations}


def test_expected_negations_are_in_the_table() -> None:
    assert TABLE_NEGATIONS == EXPECTED_NEGATIONS


@pytest.mark.parametrize(("negation", "name"), sorted(TABLE_NEGATIONS.items()))
def test_negation_sets_false(negation: str, name: str) -> None:
    assert parse_options([negation]) == {name: False}
    # It overrides the positive spelling given earlier, and is overridden by a later one.
    assert parse_options([f"{name},{negation}"]) == {name: False}
    assert parse_options([f"{negation},{name}"]) == {name: True}


@pytest.mark.parametrize("value", ["1", "0", "", "true"])
@pytest.mark.parametrize("negation", sorted(TABLE_NEGATIONS))
def test_negation_with_value_is_refused(negation: str, value: str) -> None:
    message = refused(f"{negation}={value}")
    assert quoted(negation) in message
    assert "takes no value" in message


# --------------------------------------------------------------------------
# SUPPORTED value options

# One good example per SUPPORTED value option: (value given, value parsed).
GOOD_EXAMPLE: dict[str, tuple[str, Any]] = {
    "passwd_file": ("/etc/passwd-s3fs", "/etc/passwd-s3fs"),
    "profile": ("work", "work"),
    "url": ("https://s3.example.com:8443/", "https://s3.example.com:8443"),
    "region": ("eu-west-1", "eu-west-1"),
    "bucket": ("mybucket:/some/prefix", "mybucket:/some/prefix"),
    "ca_bundle": ("/etc/ssl/certs/ca.pem", "/etc/ssl/certs/ca.pem"),
    "proxy": ("http://proxy.example.com:3128", "http://proxy.example.com:3128"),
    "uid": ("1000", 1000),
    "gid": ("100", 100),
    "umask": ("022", 0o022),
    "mp_umask": ("027", 0o027),
    "stat_cache_expire": ("1.5", 1.5),
    "max_stat_cache_size": ("500", 500),
    "max_read": ("65536", 65536),
    "read_ahead_max": ("64", 64),
    "read_ahead_memory": ("0", 0),
    "max_thread_count": ("20", 20),
    "max_dirty_data": ("1024", 1024),
    "multireq_max": ("100", 100),
    "retries": ("3", 3),
    "connect_timeout": ("2.5", 2.5),
    "readwrite_timeout": ("120", 120.0),
    "list_object_max_keys": ("100", 100),
    "dbglevel": ("info", "info"),
    "logfile": ("/var/log/s3mount.log", "/var/log/s3mount.log"),
    "instance_name": ("backup-1.eu_west", "backup-1.eu_west"),
    "iam_role": ("auto", True),
    "use_cache": ("/var/cache/s3mount", "/var/cache/s3mount"),
    "tmpdir": ("/var/tmp", "/var/tmp"),
    "multipart_size": ("16", 16),
    "multipart_threshold": ("64", 64),
    "multipart_copy_size": ("100", 100),
    "singlepart_copy_limit": ("0", 0),
    "mime": ("/etc/mime.types", "/etc/mime.types"),
    "default_acl": ("public-read", "public-read"),
    "storage_class": ("STANDARD_IA", "standard_ia"),
    "use_sse": ("kmsid:key-1", "kmsid:key-1"),
    "load_sse_c": ("/etc/s3mount-sse-c", "/etc/s3mount-sse-c"),
    "bucket_size": ("2TiB", 2 * 1024**4),
    "max_cache_size": ("1024", 1024),
    "ensure_diskfree": ("512", 512),
    "free_space_ratio": ("10", 10),
}

# (option string, spelling the message must name, value it must show).
BAD_VALUES: list[tuple[str, str, str]] = [
    ("uid=notauser", "uid", "notauser"),
    ("uid=-1", "uid", "-1"),
    ("uid=4294967295", "uid", "4294967295"),
    ("uid=08", "uid", "08"),
    ("uid=0x", "uid", "0x"),
    ("gid=nosuchgroup-s3mount", "gid", "nosuchgroup-s3mount"),
    ("gid=-5", "gid", "-5"),
    ("umask=8", "umask", "8"),
    ("umask=1000", "umask", "1000"),
    ("umask=-1", "umask", "-1"),
    ("umask=abc", "umask", "abc"),
    ("mp_umask=x", "mp_umask", "x"),
    ("mp_umask=0778", "mp_umask", "0778"),
    ("stat_cache_expire=-1", "stat_cache_expire", "-1"),
    ("stat_cache_expire=nan", "stat_cache_expire", "nan"),
    ("stat_cache_expire=soon", "stat_cache_expire", "soon"),
    ("max_stat_cache_size=abc", "max_stat_cache_size", "abc"),
    ("max_read=1024", "max_read", "1024"),
    ("max_stat_cache_size=-1", "max_stat_cache_size", "-1"),
    ("max_stat_cache_size=1.5", "max_stat_cache_size", "1.5"),
    ("read_ahead_max=1", "read_ahead_max", "1"),
    ("read_ahead_max=2048", "read_ahead_max", "2048"),
    ("read_ahead_memory=-1", "read_ahead_memory", "-1"),
    ("retries=-1", "retries", "-1"),
    ("retries=101", "retries", "101"),
    ("retries=many", "retries", "many"),
    ("connect_timeout=0", "connect_timeout", "0"),
    ("connect_timeout=-3", "connect_timeout", "-3"),
    ("connect_timeout=nan", "connect_timeout", "nan"),
    ("readwrite_timeout=0.05", "readwrite_timeout", "0.05"),
    ("readwrite_timeout=x", "readwrite_timeout", "x"),
    ("url=ftp://x", "url", "ftp://x"),
    ("url=localhost:9000", "url", "localhost:9000"),
    ("url=http://", "url", "http://"),
    ("url=//host", "url", "//host"),
    ("host=s3.example.com", "host", "s3.example.com"),
    ("proxy=ftp://p:21", "proxy", "ftp://p:21"),
    ("dbglevel=loud", "dbglevel", "loud"),
    ("dbglevel=5", "dbglevel", "5"),
    ("logfile=", "logfile", ""),
    ("instance_name=a b", "instance_name", "a b"),
    ("instance_name=x/y", "instance_name", "x/y"),
    ("instance_name=" + "n" * 65, "instance_name", "n" * 65),
    ("f2=loud", "f2", "loud"),
    ("max_thread_count=0", "max_thread_count", "0"),
    ("max_dirty_data=49", "max_dirty_data", "49"),
    ("max_dirty_data=0", "max_dirty_data", "0"),
    ("max_dirty_data=-2", "max_dirty_data", "-2"),
    ("max_thread_count=257", "max_thread_count", "257"),
    ("parallel_count=0", "parallel_count", "0"),
    ("multireq_max=ten", "multireq_max", "ten"),
    ("multireq_max=0", "multireq_max", "0"),
    ("multireq_max=257", "multireq_max", "257"),
    ("iam_role=myrole", "iam_role", "myrole"),
    ("use_cache=", "use_cache", ""),
    ("tmpdir=", "tmpdir", ""),
    ("multipart_size=4", "multipart_size", "4"),
    ("multipart_threshold=big", "multipart_threshold", "big"),
    ("multipart_copy_size=6000", "multipart_copy_size", "6000"),
    ("singlepart_copy_limit=-1", "singlepart_copy_limit", "-1"),
    ("mime=", "mime", ""),
    ("default_acl=everyone", "default_acl", "everyone"),
    ("storage_class=cheap", "storage_class", "cheap"),
    ("use_rrs=2", "use_rrs", "2"),
    ("use_sse=custom:", "use_sse", "custom:"),
    ("use_sse=sse-c", "use_sse", "sse-c"),
    ("load_sse_c=", "load_sse_c", ""),
    ("use_sse=2", "use_sse", "2"),
    ("bucket_size=lots", "bucket_size", "lots"),
    ("bucket_size=0", "bucket_size", "0"),
    ("list_object_max_keys=0", "list_object_max_keys", "0"),
    ("passwd_file=", "passwd_file", ""),
    ("profile=", "profile", ""),
    ("region=", "region", ""),
    ("endpoint=", "endpoint", ""),
    ("bucket=", "bucket", ""),
    ("ca_bundle=", "ca_bundle", ""),
    ("max_cache_size=0", "max_cache_size", "0"),
    ("ensure_diskfree=-1", "ensure_diskfree", "-1"),
    ("free_space_ratio=101", "free_space_ratio", "101"),
]

# Values that once got through and could not work.
BAD_VALUES_FORMERLY_ACCEPTED = [
    ("url=http://:9000", "url", "http://:9000"),
    ("url=http://s3.example.com:notaport", "url", "http://s3.example.com:notaport"),
    ("connect_timeout=inf", "connect_timeout", "inf"),
    ("readwrite_timeout=inf", "readwrite_timeout", "inf"),
]


def test_every_supported_value_option_has_a_good_example() -> None:
    assert sorted(GOOD_EXAMPLE) == sorted(o.name for o in SUPPORTED_VALUES)


def test_every_supported_value_option_has_a_bad_example() -> None:
    canonical = {}
    for option in SUPPORTED_VALUES:
        for spelling in spellings(option):
            canonical[spelling] = option.name
    covered = {canonical[name] for _, name, _ in BAD_VALUES if name in canonical}
    assert covered == {o.name for o in SUPPORTED_VALUES}


@pytest.mark.parametrize(("name", "example"), sorted(GOOD_EXAMPLE.items()))
def test_good_example(name: str, example: tuple[str, Any]) -> None:
    given, expected = example
    result = parse_options([f"{name}={given}"])
    assert result == {name: expected}
    assert type(result[name]) is type(expected)


@pytest.mark.parametrize(("option_string", "name", "value"),
                         [*BAD_VALUES, *BAD_VALUES_FORMERLY_ACCEPTED])
def test_bad_value(option_string: str, name: str, value: str) -> None:
    message = refused(option_string)
    assert message.startswith(f"bad value {quoted(value)} for option {quoted(name)}")


@pytest.mark.parametrize(
    "spelling",
    [s for o in SUPPORTED_VALUES if o.bare_value is None for s in spellings(o)
     if s not in ("f2", "use_rrs")],
)
def test_value_option_without_value(spelling: str) -> None:
    message = refused(spelling)
    assert message == f"option {quoted(spelling)} needs a value"


@pytest.mark.parametrize("spelling", [s for o in SUPPORTED_VALUES for s in spellings(o)])
def test_value_option_with_empty_value(spelling: str) -> None:
    message = refused(f"{spelling}=")
    assert quoted(spelling) in message
    assert "''" in message


@pytest.mark.parametrize(
    ("option_string", "expected"),
    [
        ("umask=0", {"umask": 0}),
        ("umask=777", {"umask": 0o777}),
        ("umask=0777", {"umask": 0o777}),
        ("umask=0002", {"umask": 0o002}),
        ("mp_umask=000", {"mp_umask": 0}),
        ("stat_cache_expire=0", {"stat_cache_expire": 0.0}),
        ("stat_cache_expire=900", {"stat_cache_expire": 900.0}),
        ("max_stat_cache_size=0", {"max_stat_cache_size": 0}),
        ("retries=0", {"retries": 0}),
        ("retries=100", {"retries": 100}),
        ("connect_timeout=0.1", {"connect_timeout": 0.1}),
        ("connect_timeout=300", {"connect_timeout": 300.0}),
        ("max_thread_count=1", {"max_thread_count": 1}),
        ("max_dirty_data=50", {"max_dirty_data": 50}),
        ("max_dirty_data=-1", {"max_dirty_data": -1}),
        ("max_thread_count=256", {"max_thread_count": 256}),
        ("list_object_max_keys=1", {"list_object_max_keys": 1}),
        ("list_object_max_keys=1000", {"list_object_max_keys": 1000}),
        ("url=http://127.0.0.1:9000", {"url": "http://127.0.0.1:9000"}),
        ("url=http://[::1]:9000/", {"url": "http://[::1]:9000"}),
        ("url=https://s3.amazonaws.com", {"url": "https://s3.amazonaws.com"}),
        ("url=http://localhost:9000///", {"url": "http://localhost:9000"}),
        ("proxy=https://proxy:8443/", {"proxy": "https://proxy:8443"}),
        ("passwd_file=/a=b", {"passwd_file": "/a=b"}),
        ("profile=my profile", {"profile": "my profile"}),
        ("bucket=b", {"bucket": "b"}),
        ("use_sse=custom", {"use_sse": "custom"}),
        ("use_sse=C", {"use_sse": "custom"}),
        ("use_sse=c:/etc/Key", {"use_sse": "custom:/etc/Key"}),
        ("use_sse=custom:keys", {"use_sse": "custom:keys"}),
        ("use_sse=/etc/sse-c-keys", {"use_sse": "custom:/etc/sse-c-keys"}),
        ("use_sse=k", {"use_sse": "k"}),
    ],
)
def test_more_good_values(option_string: str, expected: dict[str, Any]) -> None:
    assert parse_options([option_string]) == expected


def test_proxy_without_scheme_like_s3fs() -> None:
    assert parse_options(["proxy=proxy.example.com:3128"]) == {
        "proxy": "http://proxy.example.com:3128"
    }


# --------------------------------------------------------------------------
# uid and gid: strtol base 0, or a name


@pytest.mark.parametrize("name", ["uid", "gid"])
@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("0", 0),
        ("1000", 1000),
        ("0x10", 16),
        ("0X1f", 31),
        ("010", 8),
        ("0755", 0o755),
        ("00", 0),
        ("4294967294", 4294967294),
        ("root", 0),
    ],
)
def test_id_forms(name: str, value: str, expected: int) -> None:
    assert parse_options([f"{name}={value}"]) == {name: expected}


def test_uid_by_name_matches_passwd() -> None:
    import pwd

    entry = pwd.getpwuid(0)
    assert parse_options([f"uid={entry.pw_name}"]) == {"uid": entry.pw_uid}


def test_gid_by_name_matches_group() -> None:
    import grp

    entry = grp.getgrgid(0)
    assert parse_options([f"gid={entry.gr_name}"]) == {"gid": entry.gr_gid}


def test_unknown_user_message() -> None:
    message = refused("uid=nosuchuser-s3mount")
    assert "no such user" in message


def test_unknown_group_message() -> None:
    message = refused("gid=nosuchgroup-s3mount")
    assert "no such group" in message


# --------------------------------------------------------------------------
# Aliases


@pytest.mark.parametrize(
    ("option_string", "expected"),
    [
        ("endpoint=eu-central-1", {"region": "eu-central-1"}),
        ("host=http://127.0.0.1:9000/", {"url": "http://127.0.0.1:9000"}),
        ("parallel_count=4", {"max_thread_count": 4}),
        ("enable_noobj_cache", {"enable_negative_cache": True}),
        ("enable_noobj_cache=0", {"enable_negative_cache": False}),
        ("ssl_ca_bundle=/etc/ca.pem", {"ca_bundle": "/etc/ca.pem"}),
        ("f2", {"dbglevel": "debug"}),
        ("f2=info", {"dbglevel": "info"}),
    ],
)
def test_alias(option_string: str, expected: dict[str, Any]) -> None:
    assert parse_options([option_string]) == expected


def test_alias_and_name_share_one_value_later_wins() -> None:
    assert parse_options(["region=a,endpoint=b"]) == {"region": "b"}
    assert parse_options(["endpoint=b,region=a"]) == {"region": "a"}
    assert parse_options(["max_thread_count=2", "parallel_count=3"]) == {"max_thread_count": 3}


def test_multireq_max_is_its_own_option() -> None:
    """As in s3fs: the listing's parallel HEADs are set apart from parallel parts."""
    assert parse_options(["parallel_count=4,multireq_max=30"]) == {
        "max_thread_count": 4, "multireq_max": 30}


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("crit", "critical"), ("critical", "critical"), ("CRIT", "critical"),
        ("err", "error"), ("error", "error"),
        ("warn", "warning"), ("warning", "warning"),
        ("info", "info"), ("information", "info"),
        ("debug", "debug"), ("dbg", "debug"), ("DEBUG", "debug"),
    ],
)
def test_dbglevel_aliases(value: str, expected: str) -> None:
    assert parse_options([f"dbglevel={value}"]) == {"dbglevel": expected}


# --------------------------------------------------------------------------
# PLANNED and UNSUPPORTED


PLANNED_SPELLINGS = [(o.name, s) for o in PLANNED for s in spellings(o)]
UNSUPPORTED_SPELLINGS = [(o.name, s) for o in UNSUPPORTED for s in spellings(o)]
SENTINEL = "Sentinel-Value-0123"


@pytest.mark.parametrize("given_value", [False, True])
@pytest.mark.parametrize(("name", "spelling"), PLANNED_SPELLINGS)
def test_planned(name: str, spelling: str, given_value: bool) -> None:
    message = refused(f"{spelling}={SENTINEL}" if given_value else spelling)
    assert "not yet supported" in message
    assert quoted(spelling) in message
    note = OPTION_BY_NAME[name].note
    if note:
        assert note in message
    assert SENTINEL not in message


@pytest.mark.parametrize("given_value", [False, True])
@pytest.mark.parametrize(("name", "spelling"), UNSUPPORTED_SPELLINGS)
def test_unsupported(name: str, spelling: str, given_value: bool) -> None:
    message = refused(f"{spelling}={SENTINEL}" if given_value else spelling)
    assert "not supported" in message
    assert "not yet supported" not in message
    assert quoted(spelling) in message
    assert OPTION_BY_NAME[name].note in message
    assert SENTINEL not in message


@pytest.mark.parametrize(
    ("name", "secret"),
    [
        ("accessKeyId", "AKIAFAKEFAKEFAKE1234"),
        ("secretAccessKey", "fAkE/SeCrEt+Key0123456789abcdefghijklmno"),
    ],
)
def test_keys_on_the_command_line_are_refused_without_echoing_them(
    name: str, secret: str
) -> None:
    message = refused(f"ro,{name}={secret},uid=0")
    assert quoted(name) in message
    assert "not supported" in message
    assert "passwd_file" in message
    assert secret not in message
    assert secret[:8] not in message


def test_planned_option_is_refused_even_after_good_options() -> None:
    message = refused("ro,uid=0,servicepath=/x,retries=2")
    assert "servicepath" in message


# --------------------------------------------------------------------------
# IGNORED options and mount-table options


IGNORED_SPELLINGS = [s for o in IGNORED for s in spellings(o)]
MOUNT_TABLE_OPTIONS = [
    "_netdev", "nofail", "auto", "noauto", "user", "users", "nouser", "defaults",
    "x-systemd.automount", "x-systemd.requires=foo", "x-systemd.mount-timeout=30",
    "x-anything", "x-", "comment=systemd.automount", "relatime", "sigv4",
    "listobjectsv2", "nodnscache", "owner", "strictatime", "lazytime",
]


@pytest.mark.parametrize("spelling", sorted({*IGNORED_SPELLINGS, *MOUNT_TABLE_OPTIONS}))
def test_ignored_option_is_dropped(spelling: str) -> None:
    assert parse_options([spelling]) == {}
    assert parse_options([f"ro,{spelling},uid=7"]) == {"ro": True, "uid": 7}


@pytest.mark.parametrize("spelling", IGNORED_SPELLINGS)
def test_ignored_option_with_a_value_is_dropped(spelling: str) -> None:
    assert parse_options([f"{spelling}=1"]) == {}


def test_typical_fstab_line_from_mount_fuse() -> None:
    # What mount.fuse hands the program for an fstab entry (s3fs-format.md §4).
    given = parse_options(["rw,noexec,nosuid,nodev,passwd_file=/etc/p,_netdev,user,nofail,"
                           "x-systemd.automount,noauto,allow_other"])
    assert given == {
        "ro": False, "exec": False, "suid": False, "dev": False,
        "passwd_file": "/etc/p", "allow_other": True,
    }


# --------------------------------------------------------------------------
# Unknown options, empty items, order, several -o strings


@pytest.mark.parametrize(
    "name", ["nosuchopt", "RO", "Uid", "kernel_cache_x", "use-cache", "-o", "X-mount.mkdir"]
)
def test_unknown_option(name: str) -> None:
    message = refused(f"{name}=1")
    assert message.startswith(f"unknown option {quoted(name)}")
    assert "--help" in message


def test_unknown_option_without_value() -> None:
    assert refused("nosuchopt").startswith("unknown option 'nosuchopt'")


def test_empty_name_is_unknown() -> None:
    assert refused("=value").startswith("unknown option ''")


def test_first_error_is_reported() -> None:
    assert "'first'" in refused("ro,first,second")


@pytest.mark.parametrize(
    ("option_strings", "expected"),
    [
        ([], {}),
        ([""], {}),
        ([",,,"], {}),
        ([",,ro,"], {"ro": True}),
        ([" ro , uid = 5 "], {"ro": True, "uid": 5}),
        (["ro,rw"], {"ro": False}),
        (["rw,ro"], {"ro": True}),
        (["ro", "rw"], {"ro": False}),
        (["uid=1,uid=2"], {"uid": 2}),
        (["uid=1", "uid=2"], {"uid": 2}),
        (["ro", "uid=5", "allow_other"], {"ro": True, "uid": 5, "allow_other": True}),
        (["ro,_netdev", "", "gid=3,nofail"], {"ro": True, "gid": 3}),
        (["noexec,exec=1"], {"exec": True}),
        (["disable_negative_cache,enable_noobj_cache"], {"enable_negative_cache": True}),
    ],
)
def test_combinations(option_strings: list[str], expected: dict[str, Any]) -> None:
    assert parse_options(option_strings) == expected


def test_parse_options_accepts_any_iterable() -> None:
    assert parse_options(iter(["ro", "uid=3"])) == {"ro": True, "uid": 3}
    assert parse_options(("ro",)) == {"ro": True}


@pytest.mark.parametrize(
    ("option_strings", "expected"),
    [
        (["a,b=c", "d="], [("a", None), ("b", "c"), ("d", "")]),
        (["k=v=w"], [("k", "v=w")]),
        ([" a ,, b "], [("a", None), ("b", None)]),
        ([""], []),
        (["x-y=1"], [("x-y", "1")]),
    ],
)
def test_split_option_strings(option_strings: list[str],
                              expected: list[tuple[str, str | None]]) -> None:
    assert split_option_strings(option_strings) == expected


# --------------------------------------------------------------------------
# Settings


def test_settings_defaults_are_the_table_defaults() -> None:
    settings = settings_from({})
    for option in OPTIONS:
        assert getattr(settings, option.name) == option.default, option.name


def test_settings_fields_are_the_table_in_order() -> None:
    assert [f.name for f in dataclasses.fields(Settings)] == [o.name for o in OPTIONS]


@pytest.mark.parametrize(
    ("name", "default"),
    [
        ("stat_cache_expire", 60.0), ("max_stat_cache_size", 100000), ("retries", 5),
        ("connect_timeout", 10.0), ("readwrite_timeout", 60.0),
        ("list_object_max_keys", 1000), ("max_thread_count", 10), ("dbglevel", "warning"),
        ("max_dirty_data", 5120),
        ("enable_negative_cache", True), ("compat_dir", True), ("ro", False),
        ("exec", True), ("atime", True), ("dev", False), ("suid", False), ("mp_umask", 0),
        ("umask", None), ("uid", None), ("gid", None), ("url", None), ("allow_other", False),
        ("default_permissions", False),
    ],
)
def test_specific_defaults(name: str, default: Any) -> None:
    assert getattr(settings_from({}), name) == default


def test_settings_overlay() -> None:
    settings = settings_from(parse_options(["ro,uid=5,dbglevel=err,disable_negative_cache"]))
    assert settings.ro is True
    assert settings.uid == 5
    assert settings.dbglevel == "error"
    assert settings.enable_negative_cache is False
    assert settings.retries == 5
    assert settings.gid is None


def test_settings_are_frozen() -> None:
    settings = settings_from({"ro": True})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.ro = False  # type: ignore[misc]
    assert settings.ro is True


def test_settings_refuse_unknown_names() -> None:
    with pytest.raises(TypeError):
        settings_from({"nosuchopt": 1})


def test_settings_from_every_good_example() -> None:
    given = parse_options([",".join(f"{n}={v}" for n, (v, _) in GOOD_EXAMPLE.items())])
    settings = settings_from(given)
    for name, (_, expected) in GOOD_EXAMPLE.items():
        assert getattr(settings, name) == expected


# --------------------------------------------------------------------------
# help_rows


def row_name(spelling: str) -> str:
    return re.split(r"[=\s]", spelling, maxsplit=1)[0]


@pytest.mark.parametrize("group", GROUPS)
def test_help_rows_only_user_visible_options(group: str) -> None:
    rows = help_rows(group)
    expected = [o.name for o in OPTIONS if o.group == group
                and o.status in (Status.SUPPORTED, Status.IGNORED)]
    assert [row_name(spelling) for spelling, _ in rows] == expected
    assert rows, f"group {group!r} has no rows"
    for spelling, text in rows:
        option = OPTION_BY_NAME[row_name(spelling)]
        assert text == option.help
        if option.metavar:
            assert spelling.startswith(f"{option.name}={option.metavar}")
        else:
            assert "=" not in spelling.split(" ")[0]


def test_every_supported_option_is_in_exactly_one_group() -> None:
    names = [row_name(s) for group in GROUPS for s, _ in help_rows(group)]
    for option in SUPPORTED:
        assert names.count(option.name) == 1, option.name
    for option in [*PLANNED, *UNSUPPORTED]:
        assert option.name not in names


@pytest.mark.parametrize("option", SUPPORTED, ids=lambda o: o.name)
def test_supported_option_has_help(option: Option) -> None:
    assert option.help.strip()
    if not option.is_flag:
        assert option.metavar, "a value option shows what value it takes"


@pytest.mark.parametrize("option", [o for o in SUPPORTED if o.aliases], ids=lambda o: o.name)
def test_help_row_shows_aliases(option: Option) -> None:
    spelling = next(s for s, _ in help_rows(option.group) if row_name(s) == option.name)
    for alias in option.aliases:
        assert alias in spelling


def test_help_rows_of_unknown_group() -> None:
    assert help_rows("No such group") == []


def test_not_available_lists_planned_and_unsupported() -> None:
    assert not_available() == [*[o for o in OPTIONS if o.status in (Status.PLANNED,
                                                                    Status.UNSUPPORTED)]]
    assert {o.name for o in not_available()} == {o.name for o in [*PLANNED, *UNSUPPORTED]}


@pytest.mark.parametrize("option", [o for o in SUPPORTED if o.negations], ids=lambda o: o.name)
def test_help_row_does_not_call_a_negation_an_alias(option: Option) -> None:
    spelling = next(s for s, _ in help_rows(option.group) if row_name(s) == option.name)
    also = re.search(r"\(also: ([^)]*)\)", spelling)
    also_names = also.group(1).split(", ") if also else []
    for negation in option.negations:
        assert negation not in also_names
