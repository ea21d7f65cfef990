"""Tests of s3mount.config: the bucket argument and build_config."""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path
from typing import Any

import pytest

from s3mount import config as config_module
from s3mount.config import MountConfig, build_config, split_bucket_argument
from s3mount.errors import UsageError
from s3mount.mount import dirty_window, fuse_options

MiB = 1024 * 1024


def build(arguments: list[str], option_strings: list[str] | None = None, *,
          foreground: bool = False, debug: bool = False,
          single_threaded: bool = False, environ: dict[str, str] | None = None) -> MountConfig:
    return build_config(arguments, option_strings or [], foreground=foreground, debug=debug,
                        single_threaded=single_threaded, environ=environ or {})


def usage_error(arguments: list[str], option_strings: list[str] | None = None,
                **flags: Any) -> str:
    with pytest.raises(UsageError) as info:
        build(arguments, option_strings, **flags)
    assert info.value.exit_code == 2
    assert "\n" not in info.value.message
    return info.value.message


@pytest.fixture
def as_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 0)


@pytest.fixture
def as_user(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(os, "geteuid", lambda: 1000)


# --------------------------------------------------------------------------
# split_bucket_argument


@pytest.mark.parametrize(
    ("argument", "expected"),
    [
        ("b", ("b", "")),
        ("mybucket", ("mybucket", "")),
        ("my.bucket-1", ("my.bucket-1", "")),
        ("MyBucket_2", ("MyBucket_2", "")),
        ("b:/", ("b", "")),
        ("b:/p", ("b", "p/")),
        ("b:/p/", ("b", "p/")),
        ("b:/a/b/", ("b", "a/b/")),
        ("b:/a/b", ("b", "a/b/")),
        ("b:/a b/c", ("b", "a b/c/")),
        ("b:/a:b", ("b", "a:b/")),
        ("b:/ünïcode", ("b", "ünïcode/")),
    ],
)
def test_split_bucket_argument(argument: str, expected: tuple[str, str]) -> None:
    assert split_bucket_argument(argument) == expected


@pytest.mark.parametrize(
    ("argument", "expected_text"),
    [
        ("b:p", "must start with /"),
        ("b:", "must start with /"),
        ("b:p/q", "must start with /"),
        ("b:/a//b", "empty path component"),
        ("b:/a/../b", "'..'"),
        ("b:/./a", "'.'"),
        ("b://a", "looks like a URL"),
        ("s3://b", "looks like a URL"),
        ("https://s3.example.com/b", "looks like a URL"),
        ("", "bucket name is empty"),
        (":/p", "bucket name is empty"),
    ],
)
def test_split_bucket_argument_errors(argument: str, expected_text: str) -> None:
    with pytest.raises(UsageError) as info:
        split_bucket_argument(argument)
    assert expected_text in info.value.message
    assert info.value.exit_code == 2


def test_url_error_tells_where_the_endpoint_goes() -> None:
    with pytest.raises(UsageError) as info:
        split_bucket_argument("s3://mybucket")
    assert "'s3://mybucket'" in info.value.message
    assert "URL" in info.value.message
    assert "-o url=" in info.value.message


@pytest.mark.parametrize(
    "bucket",
    ["b/c", "b@c", "b c", "b;c", "b*", "b?", "b\\c", "b+c", "b=c", "b|c", "b!c", "b#c",
     "b$c", "b%c", "b^c", "b&c", "b\tc", " b", "b\n"],
)
def test_bad_bucket_characters(bucket: str) -> None:
    with pytest.raises(UsageError) as info:
        split_bucket_argument(bucket)
    assert "not a valid bucket name" in info.value.message


def test_bad_bucket_characters_with_prefix() -> None:
    with pytest.raises(UsageError, match="not a valid bucket name"):
        split_bucket_argument("b@d:/prefix")


# --------------------------------------------------------------------------
# build_config: arguments


def test_two_arguments(tmp_path: Path) -> None:
    config = build(["mybucket:/some/prefix", str(tmp_path)])
    assert config.bucket == "mybucket"
    assert config.prefix == "some/prefix/"
    assert config.mountpoint == str(tmp_path)
    assert config.source == "mybucket:/some/prefix"
    assert config.foreground is False
    assert config.debug is False
    assert config.single_threaded is False


def test_source_without_prefix(tmp_path: Path) -> None:
    config = build(["mybucket", str(tmp_path)])
    assert config.prefix == ""
    assert config.source == "mybucket"


def test_one_argument_and_bucket_option(tmp_path: Path) -> None:
    config = build([str(tmp_path)], ["bucket=b:/x"])
    assert (config.bucket, config.prefix, config.mountpoint) == ("b", "x/", str(tmp_path))
    assert config.source == "b:/x"


def test_bucket_option_is_checked_like_the_argument(tmp_path: Path) -> None:
    assert "looks like a URL" in usage_error([str(tmp_path)], ["bucket=s3://b"])
    assert "must start with /" in usage_error([str(tmp_path)], ["bucket=b:x"])


def test_bucket_given_twice(tmp_path: Path) -> None:
    message = usage_error(["b", str(tmp_path)], ["bucket=c"])
    assert "bucket is given twice" in message


@pytest.mark.parametrize("arguments", [[], ["only-one"], ["a", "b", "c"], ["a", "b", "c", "d"]])
def test_wrong_number_of_arguments(arguments: list[str]) -> None:
    message = usage_error(arguments)
    assert "expected BUCKET[:/PREFIX] MOUNTPOINT" in message


def test_three_arguments_even_with_bucket_option() -> None:
    assert "expected BUCKET" in usage_error(["a", "b", "c"], ["bucket=x"])


def test_zero_arguments_with_bucket_option() -> None:
    assert "expected BUCKET" in usage_error([], ["bucket=x"])


def test_bad_option_is_a_usage_error(tmp_path: Path) -> None:
    message = usage_error(["b", str(tmp_path)], ["ro,nosuchopt"])
    assert "unknown option 'nosuchopt'" in message


def test_options_are_parsed_before_the_arguments_are_checked() -> None:
    # A bad option is reported even when the arguments are also wrong.
    assert "nosuchopt" in usage_error([], ["nosuchopt"])


# --------------------------------------------------------------------------
# build_config: the environment (containers, systemd units)


def test_bucket_and_mountpoint_from_the_environment(tmp_path: Path) -> None:
    config = build([], environ={"S3MOUNT_BUCKET": "b:/p", "S3MOUNT_MOUNTPOINT": str(tmp_path)})
    assert (config.bucket, config.prefix, config.mountpoint) == ("b", "p/", str(tmp_path))


def test_one_argument_is_the_mountpoint_when_the_bucket_comes_from_the_environment(
        tmp_path: Path) -> None:
    config = build([str(tmp_path)], environ={"S3MOUNT_BUCKET": "b",
                                             "S3MOUNT_MOUNTPOINT": "/elsewhere"})
    assert (config.bucket, config.mountpoint) == ("b", str(tmp_path))


def test_arguments_win_over_the_environment(tmp_path: Path) -> None:
    config = build(["a", str(tmp_path)], environ={"S3MOUNT_BUCKET": "b",
                                                  "S3MOUNT_MOUNTPOINT": "/elsewhere"})
    assert (config.bucket, config.mountpoint) == ("a", str(tmp_path))


def test_bucket_option_wins_over_the_environment(tmp_path: Path) -> None:
    config = build([str(tmp_path)], ["bucket=a"], environ={"S3MOUNT_BUCKET": "b"})
    assert config.bucket == "a"


@pytest.mark.parametrize(("environ", "missing"), [
    ({"S3MOUNT_MOUNTPOINT": "/m"}, "the bucket is missing"),
    ({"S3MOUNT_BUCKET": "b"}, "the mount point is missing"),
    ({"S3MOUNT_BUCKET": "", "S3MOUNT_MOUNTPOINT": "/m"}, "the bucket is missing"),
])
def test_missing_parts_name_the_variables(environ: dict[str, str], missing: str) -> None:
    message = usage_error([], environ=environ)
    assert missing in message
    assert "S3MOUNT_BUCKET and S3MOUNT_MOUNTPOINT" in message


def test_options_from_the_environment_come_before_the_command_line(tmp_path: Path) -> None:
    environ = {"S3MOUNT_OPTIONS": "ro,uid=1000,umask=022"}
    config = build(["b", str(tmp_path)], ["uid=2000"], environ=environ)
    assert config.settings.ro is True
    assert config.settings.uid == 2000
    assert config.settings.umask == 0o022


def test_a_bad_option_in_the_environment_is_a_usage_error(tmp_path: Path) -> None:
    message = usage_error(["b", str(tmp_path)], environ={"S3MOUNT_OPTIONS": "nosuchopt"})
    assert "unknown option 'nosuchopt'" in message


def test_logfile_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = build(["b", "mnt"], ["logfile=s3mount.log"])
    assert config.settings.logfile == str(tmp_path / "s3mount.log")


def test_mountpoint_is_made_absolute(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = build(["b", "mnt"])
    assert config.mountpoint == str(tmp_path / "mnt")
    assert os.path.isabs(config.mountpoint)


def test_mountpoint_is_normalised(tmp_path: Path) -> None:
    config = build(["b", f"{tmp_path}/a/../mnt/"])
    assert config.mountpoint == str(tmp_path / "mnt")


# --------------------------------------------------------------------------
# build_config: flags and implied options


def test_debug_sets_dbglevel_and_foreground(tmp_path: Path) -> None:
    config = build(["b", str(tmp_path)], ["dbglevel=err"], debug=True)
    assert config.settings.dbglevel == "debug"
    assert config.foreground is True
    assert config.debug is True


def test_without_debug_dbglevel_is_the_option(tmp_path: Path) -> None:
    config = build(["b", str(tmp_path)], ["dbglevel=err"])
    assert config.settings.dbglevel == "error"
    assert config.foreground is False


def test_default_dbglevel(tmp_path: Path) -> None:
    assert build(["b", str(tmp_path)]).settings.dbglevel == "warning"


@pytest.mark.parametrize("foreground", [False, True])
@pytest.mark.parametrize("single_threaded", [False, True])
def test_flags_pass_through(tmp_path: Path, foreground: bool, single_threaded: bool) -> None:
    config = build(["b", str(tmp_path)], foreground=foreground, single_threaded=single_threaded)
    assert config.foreground is foreground
    assert config.single_threaded is single_threaded
    assert config.debug is False


@pytest.mark.parametrize(
    ("option_strings", "expected"),
    [
        ([], False),
        (["default_permissions"], True),
        (["allow_other"], True),
        (["allow_other=0"], False),
        (["allow_other,default_permissions=0"], True),
        (["allow_root"], False),
    ],
)
def test_allow_other_implies_default_permissions(tmp_path: Path, option_strings: list[str],
                                                  expected: bool) -> None:
    config = build(["b", str(tmp_path)], option_strings)
    assert config.settings.default_permissions is expected


def test_settings_are_built_from_the_options(tmp_path: Path) -> None:
    config = build(["b", str(tmp_path)], ["ro,uid=5", "retries=2,_netdev"])
    assert config.settings.ro is True
    assert config.settings.uid == 5
    assert config.settings.retries == 2
    assert config.settings.stat_cache_expire == 60.0


def test_config_is_frozen(tmp_path: Path) -> None:
    config = build(["b", str(tmp_path)])
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.bucket = "other"  # type: ignore[misc]


# --------------------------------------------------------------------------
# uid=0 / gid=0 only for root


def test_config_module_uses_os_geteuid() -> None:
    # The monkeypatching below only means something if config asks os.geteuid().
    assert config_module.os is os


@pytest.mark.usefixtures("as_root")
@pytest.mark.parametrize("option", ["uid=0", "gid=0", "uid=root", "gid=root", "uid=0,gid=0"])
def test_root_may_give_id_zero(tmp_path: Path, option: str) -> None:
    config = build(["b", str(tmp_path)], [option])
    assert 0 in (config.settings.uid, config.settings.gid)


def test_really_running_as_root_may_give_id_zero(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("needs root")
    assert build(["b", str(tmp_path)], ["uid=0"]).settings.uid == 0


@pytest.mark.usefixtures("as_user")
@pytest.mark.parametrize(
    "option", ["uid=0", "gid=0", "uid=root", "gid=root", "uid=00", "gid=0x0", "uid=5,gid=0"]
)
def test_non_root_may_not_give_id_zero(tmp_path: Path, option: str) -> None:
    message = usage_error(["b", str(tmp_path)], [option])
    assert "only root" in message


@pytest.mark.usefixtures("as_user")
@pytest.mark.parametrize("option", ["uid=1000", "gid=1000", "uid=1,gid=1", "umask=0"])
def test_non_root_may_give_other_ids(tmp_path: Path, option: str) -> None:
    config = build(["b", str(tmp_path)], [option])
    assert 0 not in (config.settings.uid, config.settings.gid)


def test_iam_role_keeps_only_the_instance_role_provider():
    """s3fs's iam_role: no passwd file or environment keys may be used instead."""
    import botocore.session

    from s3mount.store import _keep_only_instance_role

    session = botocore.session.get_session()
    _keep_only_instance_role(session)
    methods = [p.METHOD for p in session.get_component("credential_provider").providers]
    assert methods == ["iam-role"]


def test_fuse_options_ask_for_big_writes() -> None:
    # Without big_writes, libfuse 2 splits every write into 4 KiB requests.
    options = fuse_options(build(["bucket", "/mnt"]))
    assert "big_writes" in options
    assert "fsname=bucket" in options


def test_max_read_is_passed_to_fuse_only_when_given() -> None:
    assert not any(o.startswith("max_read") for o in fuse_options(build(["bucket", "/mnt"])))
    options = fuse_options(build(["bucket", "/mnt"], ["max_read=65536"]))
    assert "max_read=65536" in options


@pytest.mark.parametrize(
    ("max_dirty_data", "max_cache_size", "window"),
    [(5120, None, 5120 * MiB), (-1, None, None), (5120, 1000, 500 * MiB),
     (-1, 1000, 500 * MiB), (100, 1000, 100 * MiB)],
)
def test_the_dirty_window_is_at_most_half_the_cache(max_dirty_data: int,
                                                    max_cache_size: int | None,
                                                    window: int | None) -> None:
    assert dirty_window(max_dirty_data, max_cache_size) == window
