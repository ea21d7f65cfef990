"""Tests of the s3mount command's --help, --version and usage errors.

The real command runs in a subprocess with a minimal, explicit environment.
Nothing here mounts: every case exits before mounting.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import s3mount
from s3mount.options import GROUPS, OPTIONS, Status, help_rows

SUPPORTED_NAMES = [o.name for o in OPTIONS if o.status is Status.SUPPORTED]
REFUSED_NAMES = [o.name for o in OPTIONS if o.status in (Status.PLANNED, Status.UNSUPPORTED)]


def run(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {"PATH": os.environ["PATH"], "HOME": str(tmp_path), "LANG": "C.UTF-8"}
    return subprocess.run([sys.executable, "-m", "s3mount", *args], capture_output=True,
                          text=True, env=env, cwd=tmp_path, stdin=subprocess.DEVNULL,
                          timeout=60)


def assert_one_line_usage_error(result: subprocess.CompletedProcess[str]) -> str:
    assert result.returncode == 2, result.stderr
    assert result.stdout == ""
    assert "Traceback" not in result.stderr
    assert result.stderr.endswith("\n")
    assert result.stderr.count("\n") == 1, result.stderr
    assert result.stderr.startswith("s3mount: ")
    return result.stderr


@pytest.fixture(scope="module")
def help_text(tmp_path_factory: pytest.TempPathFactory) -> str:
    result = run(tmp_path_factory.mktemp("help"), "--help")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    return result.stdout


def test_help_usage_line(help_text: str) -> None:
    assert help_text.startswith("Usage: s3mount [OPTIONS] BUCKET[:/PREFIX] MOUNTPOINT\n")


@pytest.mark.parametrize("flag", ["-o", "-f", "--foreground", "-d", "--debug", "-s",
                                  "--version", "--help"])
def test_help_lists_command_flags(help_text: str, flag: str) -> None:
    assert re.search(rf"(^|[ ,]){re.escape(flag)}\b", help_text, re.M)


@pytest.mark.parametrize("group", GROUPS)
def test_help_has_group_heading(help_text: str, group: str) -> None:
    assert f"\nMount options (-o): {group}:\n" in help_text


def test_help_groups_in_table_order(help_text: str) -> None:
    positions = [help_text.index(f"Mount options (-o): {group}:") for group in GROUPS]
    assert positions == sorted(positions)


def section(help_text: str, group: str) -> str:
    heading = f"\nMount options (-o): {group}:\n"
    rest = help_text[help_text.index(heading) + len(heading):]
    end = re.search(r"^\S", rest, re.M)
    return rest[: end.start()] if end else rest


@pytest.mark.parametrize("name", SUPPORTED_NAMES)
def test_help_lists_supported_option(help_text: str, name: str) -> None:
    option = next(o for o in OPTIONS if o.name == name)
    body = section(help_text, option.group)
    # Each option starts its own row in its group's section.
    assert re.search(rf"^  {re.escape(name)}(=|\s|$)", body, re.M), body


@pytest.mark.parametrize("group", GROUPS)
def test_help_section_has_one_row_per_help_row(help_text: str, group: str) -> None:
    body = section(help_text, group)
    row_starts = re.findall(r"^  (\S+)", body, re.M)
    names = [re.split(r"[=\s]", spelling, maxsplit=1)[0] for spelling, _ in help_rows(group)]
    assert [re.split(r"=", start, maxsplit=1)[0] for start in row_starts] == names


def test_help_lists_refused_options(help_text: str) -> None:
    start = help_text.index("Recognised but refused")
    refused = re.findall(r"[\w]+", help_text[start:].split(":", 1)[1])
    for name in REFUSED_NAMES:
        assert name in refused
    for name in SUPPORTED_NAMES:
        assert name not in refused


def test_short_help_flag(tmp_path: Path, help_text: str) -> None:
    result = run(tmp_path, "-h")
    assert result.returncode == 0
    assert result.stdout == help_text


def test_version(tmp_path: Path) -> None:
    result = run(tmp_path, "--version")
    assert result.returncode == 0, result.stderr
    assert result.stderr == ""
    assert result.stdout.count("\n") == 1
    line = result.stdout.rstrip("\n")
    match = re.fullmatch(
        r"s3mount (\S+) \(Python (\d+\.\d+\.\d+\S*), llfuse (\d[\w.]*), "
        r"botocore (\d[\w.]*), libfuse (\d+\.\d+)\)",
        line,
    )
    assert match, line
    assert match.group(1) == s3mount.__version__
    assert match.group(2) == ".".join(map(str, sys.version_info[:3]))


def test_version_wins_over_other_arguments(tmp_path: Path) -> None:
    result = run(tmp_path, "b", str(tmp_path), "-o", "nosuchopt", "--version")
    assert result.returncode == 0
    assert result.stdout.startswith("s3mount ")


@pytest.mark.parametrize("flag", ["--bogus", "-x", "--bogus=1"])
def test_unknown_flag(tmp_path: Path, flag: str) -> None:
    stderr = assert_one_line_usage_error(run(tmp_path, "b", str(tmp_path), flag))
    assert flag.split("=")[0] in stderr


def test_unknown_option(tmp_path: Path) -> None:
    stderr = assert_one_line_usage_error(run(tmp_path, "b", str(tmp_path), "-o", "nosuchopt"))
    assert "unknown option 'nosuchopt'" in stderr


def test_planned_option(tmp_path: Path) -> None:
    stderr = assert_one_line_usage_error(
        run(tmp_path, "b", str(tmp_path), "-o", "servicepath=/x")
    )
    assert "not yet supported" in stderr
    assert "'servicepath'" in stderr


def test_unsupported_option_does_not_echo_the_secret(tmp_path: Path) -> None:
    secret = "fAkE/SeCrEt+0123456789abcdefghij"
    stderr = assert_one_line_usage_error(
        run(tmp_path, "b", str(tmp_path), "-o", f"ro,secretAccessKey={secret}")
    )
    assert "not supported" in stderr
    assert secret not in stderr


def test_bad_option_value(tmp_path: Path) -> None:
    stderr = assert_one_line_usage_error(run(tmp_path, "b", str(tmp_path), "-o", "umask=8"))
    assert "bad value '8' for option 'umask'" in stderr


@pytest.mark.parametrize("args", [["mybucket"], [], ["a", "b", "c"]])
def test_wrong_number_of_arguments(tmp_path: Path, args: list[str]) -> None:
    stderr = assert_one_line_usage_error(run(tmp_path, *args))
    assert "BUCKET[:/PREFIX] MOUNTPOINT" in stderr


def test_missing_option_value(tmp_path: Path) -> None:
    stderr = assert_one_line_usage_error(run(tmp_path, "b", str(tmp_path), "-o"))
    assert "-o" in stderr


def test_bad_bucket_argument(tmp_path: Path) -> None:
    stderr = assert_one_line_usage_error(run(tmp_path, "s3://b", str(tmp_path)))
    assert "looks like a URL" in stderr
