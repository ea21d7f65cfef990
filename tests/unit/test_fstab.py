"""Tests of s3mount.fstab: the mount(8) helper ``mount.s3mount`` (s3fs-format.md §4).

Only the argument translation and fake mode (-f) are tested here; nothing mounts.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from s3mount.fstab import helper_arguments, main


def run_main(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    with pytest.raises(SystemExit) as info:
        main(argv)
    out, err = capsys.readouterr()
    code = info.value.code
    return (0 if code is None else code), out, err


# --------------------------------------------------------------------------
# helper_arguments


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["b", "/mnt", "-o", "rw,_netdev", "-n", "-s", "-v"],
         ["b", "/mnt", "-o", "rw,_netdev"]),
        (["b", "/mnt", "-n", "-o", "rw", "-s"], ["b", "/mnt", "-o", "rw"]),
        (["b", "/mnt"], ["b", "/mnt"]),
        (["b", "/mnt", "-orw"], ["b", "/mnt", "-o", "rw"]),
        (["b", "/mnt", "-orw,uid=5"], ["b", "/mnt", "-o", "rw,uid=5"]),
        (["s3mount#bucket", "/mnt", "-o", "rw"], ["bucket", "/mnt", "-o", "rw"]),
        (["s3mount#bucket:/p", "/mnt"], ["bucket:/p", "/mnt"]),
        (["b", "/mnt", "-o", "rw", "-o", "uid=5", "-ogid=6"],
         ["b", "/mnt", "-o", "rw", "-o", "uid=5", "-o", "gid=6"]),
        (["-o", "ro", "b", "/mnt"], ["b", "/mnt", "-o", "ro"]),
        (["b", "-o", "ro", "/mnt"], ["b", "/mnt", "-o", "ro"]),
        (["b", "/mnt", "-o"], ["b", "/mnt", "-o", ""]),
        (["b", "/mnt", "-v", "-v"], ["b", "/mnt"]),
    ],
)
def test_helper_arguments(argv: list[str], expected: list[str]) -> None:
    assert helper_arguments(argv) == (expected, False)


@pytest.mark.parametrize(
    "argv",
    [
        ["b", "/mnt", "-f"],
        ["b", "/mnt", "-o", "rw", "-f"],
        ["-f", "b", "/mnt", "-n", "-o", "rw"],
    ],
)
def test_fake_flag(argv: list[str]) -> None:
    arguments, fake = helper_arguments(argv)
    assert fake is True
    assert "-f" not in arguments
    assert arguments[:2] == ["b", "/mnt"]


@pytest.mark.parametrize("flag", ["-n", "-s", "-v", "-f"])
def test_helper_flags_never_reach_s3mount(flag: str) -> None:
    arguments, _ = helper_arguments(["b", "/mnt", flag, "-o", "rw"])
    assert flag not in arguments
    # In particular, mount(8)'s -s (sloppy) must not become s3mount's -s (single-threaded)
    # and -f (fake) must not become -f (foreground).
    assert arguments == ["b", "/mnt", "-o", "rw"]


def test_old_source_prefix_only_stripped_from_the_source() -> None:
    arguments, _ = helper_arguments(["b", "s3mount#mnt"])
    assert arguments == ["b", "s3mount#mnt"]


def test_helper_arguments_does_not_change_its_input() -> None:
    argv = ["s3mount#b", "/mnt", "-orw", "-n"]
    helper_arguments(argv)
    assert argv == ["s3mount#b", "/mnt", "-orw", "-n"]


def test_namespace_option_is_not_positional() -> None:
    arguments, _ = helper_arguments(["b", "/mnt", "-N", "/proc/1/ns/mnt", "-o", "rw"])
    assert arguments[:2] == ["b", "/mnt"]
    assert "/proc/1/ns/mnt" not in arguments


# --------------------------------------------------------------------------
# main in fake mode (mount -f): check everything, mount nothing


@pytest.mark.parametrize(
    "options",
    [
        "rw,nofail,_netdev",
        "rw,noexec,nosuid,nodev,_netdev,user,nofail,x-systemd.automount,noauto",
        "defaults,allow_other,uid=1000,gid=1000,umask=022",
        "ro,passwd_file=/etc/passwd-s3fs,url=http://127.0.0.1:9000,use_path_request_style",
    ],
)
def test_fake_mount_succeeds(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                             options: str) -> None:
    code, out, err = run_main(["b", str(tmp_path), "-o", options, "-f"], capsys)
    assert code == 0
    assert out == ""
    assert err == ""


def test_fake_mount_old_source_form(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["s3mount#b:/prefix", str(tmp_path), "-o", "rw", "-f", "-n"], capsys)
    assert (code, err) == (0, "")


def test_fake_mount_with_several_option_strings(tmp_path: Path,
                                                capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["b", str(tmp_path), "-o", "rw", "-ouid=5", "-f"], capsys)
    assert (code, err) == (0, "")


def test_fake_mount_bucket_in_options(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # s3fs's other form: only a mount point, the bucket in -o bucket=.
    code, _, err = run_main([str(tmp_path), "-o", "bucket=b", "-f"], capsys)
    assert (code, err) == (0, "")


@pytest.mark.parametrize(
    ("argv_tail", "expected_text"),
    [
        (["-o", "rw,nosuchopt"], "unknown option 'nosuchopt'"),
        (["-o", "servicepath=/x"], "not yet supported"),
        (["-o", "uid=notauser"], "bad value 'notauser' for option 'uid'"),
        (["-o", "accessKeyId=AKIAFAKE0123"], "not supported"),
        (["-o", "ro", "-o", "nosuchopt"], "nosuchopt"),
    ],
)
def test_fake_mount_bad_option(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                               argv_tail: list[str], expected_text: str) -> None:
    code, out, err = run_main(["b", str(tmp_path), *argv_tail, "-f"], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1 and err.endswith("\n")
    assert err.startswith("mount.s3mount: ")
    assert expected_text in err
    assert "AKIAFAKE0123" not in err
    assert "Traceback" not in err


@pytest.mark.parametrize(
    "argv",
    [
        ["b", "-f"],
        ["-f"],
        ["b", "/mnt", "extra", "-f"],
        ["s3://b", "/mnt", "-f"],
    ],
)
def test_fake_mount_bad_arguments(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code, out, err = run_main(argv, capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert err.startswith("mount.s3mount: ")


def test_fake_mount_bucket_named_like_its_options(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run_main(["nofail", str(tmp_path), "-o", "nofail", "-f"], capsys)
    assert (code, err) == (0, "")


# --------------------------------------------------------------------------
# main without -f hands over to the s3mount command; only the error paths
# (which fail before anything is mounted) are tested here.


@pytest.mark.parametrize(
    ("argv_tail", "expected_text"),
    [
        (["-o", "rw,_netdev,nosuchopt", "-n"], "unknown option 'nosuchopt'"),
        (["-o", "servicepath=/x"], "not yet supported"),
    ],
)
def test_real_mount_bad_option_fails_before_mounting(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv_tail: list[str],
    expected_text: str,
) -> None:
    code, out, err = run_main(["b", str(tmp_path), *argv_tail], capsys)
    assert code == 2
    assert out == ""
    assert err.count("\n") == 1
    assert expected_text in err
    assert "Traceback" not in err
