"""Tests of the man pages in man/: generated from the option table, complete, and
clean for the three formatters people use (mandoc, groff, man-db).

The formatters are required, not optional: `make system-deps` installs them
(mandoc, groff-base, man-db in the Makefile's APT_PACKAGES), so a missing one
fails here instead of silently skipping the checks.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import click
import pytest

from s3mount.cli import command
from s3mount.docs import MAN_BEGIN, MAN_END, options_roff, render_man, roff_escape, roff_line
from s3mount.fstab import helper_arguments
from s3mount.options import OPTION_BY_NAME, OPTIONS, Status
from s3mount.volume_driver import DEFAULT_MOUNT_ROOT, DEFAULT_SOCKET, DEFAULT_STATE_DIR
from s3mount.volume_driver import command as driver_command
from s3mount.volume_options import CLOUD_FOUNDRY_KEYS

ROOT = Path(__file__).resolve().parents[2]
MAN_DIR = ROOT / "man"
S3MOUNT_1 = MAN_DIR / "s3mount.1"
MOUNT_HELPER_8 = MAN_DIR / "mount.s3mount.8"
VOLUME_DRIVER_8 = MAN_DIR / "s3mount-volume-driver.8"
PAGES = [S3MOUNT_1, MOUNT_HELPER_8, VOLUME_DRIVER_8]


def tool(name: str, package: str) -> str:
    path = shutil.which(name)
    assert path, f"{name} is missing: apt-get install {package} (or: make system-deps)"
    return path


def run_tool(*argv: str,
             extra_env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    # A fixed locale and width, so the output does not depend on the terminal.
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "LC_ALL": "C.UTF-8", **(extra_env or {})}
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=60,
                          stdin=subprocess.DEVNULL)


def rendered(page: Path, width: int = 80) -> str:
    """The page as man(1) shows it, without pager and without bold/underline."""
    result = run_tool(tool("man", "man-db"), "-l", "--warnings", str(page),
                      extra_env={"MANWIDTH": str(width), "MANPAGER": "cat", "PAGER": "cat",
                                 "MAN_KEEP_FORMATTING": ""})
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    # Overstrike bold (c\bc) and underline (_\bc), in case man-db still emits them.
    return re.sub(r".\x08", "", result.stdout)


# --------------------------------------------------------------------------
# Generated region


def test_man_page_option_list_matches_the_option_table() -> None:
    text = S3MOUNT_1.read_text(encoding="utf-8")
    assert render_man(text) == text, "run: python -m s3mount.docs (man/s3mount.1 is stale)"


def test_every_option_is_in_the_man_page() -> None:
    text = S3MOUNT_1.read_text(encoding="utf-8")
    for option in OPTIONS:
        assert f"\\fB{roff_escape(option.name)}\\fR" in text, option.name
        if option.status is Status.UNSUPPORTED:
            assert roff_escape(option.note) in re.sub(r"\s+", " ", text), option.name


def test_options_are_grouped_like_help() -> None:
    generated = options_roff()
    headings = re.findall(r'^\.SS "\\-o options: (.*)"$', generated, re.MULTILINE)
    groups_in_help_order = list(dict.fromkeys(
        o.group for o in OPTIONS if o.status in (Status.SUPPORTED, Status.IGNORED)))
    assert headings == groups_in_help_order


def test_every_command_line_flag_is_in_the_man_page() -> None:
    text = S3MOUNT_1.read_text(encoding="utf-8")
    flags = [flag for param in command.params if isinstance(param, click.Option)
             for flag in (*param.opts, *param.secondary_opts)]
    assert flags
    for flag in flags:
        assert re.search(rf"(?<![\w\\-]){re.escape(roff_escape(flag))}(?![\w\\-])", text), flag


def test_render_replaces_only_the_marked_region() -> None:
    text = f".TH X 1\n.SH OPTIONS\n{MAN_BEGIN}\n.TP\nstale\n{MAN_END}\n.SH FILES\n"
    rendered_text = render_man(text)
    assert rendered_text.startswith(f".TH X 1\n.SH OPTIONS\n{MAN_BEGIN}\n")
    assert rendered_text.endswith(f"{MAN_END}\n.SH FILES\n")
    assert "stale" not in rendered_text
    with pytest.raises(ValueError):
        render_man(".TH X 1\n")


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("a\\b", "a\\eb"),
        ("x-amz-meta-mode", "x\\-amz\\-meta\\-mode"),
        ("— ≥", "\\[u2014] \\[u2265]"),
        ("'quoted' and .dotted", "'quoted' and .dotted"),
    ],
)
def test_roff_escape(text: str, expected: str) -> None:
    assert roff_escape(text) == expected


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        (".hidden request", "\\&.hidden request"),
        ("'dir_$folder$'", "\\&'dir_$folder$'"),
        ("  leading spaces", "leading spaces"),
        ("plain", "plain"),
    ],
)
def test_roff_line_never_starts_a_request(line: str, expected: str) -> None:
    assert roff_line(line) == expected


def test_generated_lines_are_text_or_known_macros() -> None:
    for line in options_roff().splitlines():
        assert line, "an empty line in man(7) source is a paragraph break with a warning"
        if line.startswith((".", "'")):
            assert re.match(r'\.(SS "[^"]*"|TP)$', line), line
        assert not line.startswith(" "), line


# --------------------------------------------------------------------------
# The mount helper's page documents what s3mount.fstab does


def test_helper_page_documents_every_helper_flag() -> None:
    text = MOUNT_HELPER_8.read_text(encoding="utf-8")
    for flag in ("-o", "-f", "-n", "-s", "-v", "-N", "-t"):
        assert re.search(rf"^\.B[IR]? {re.escape(roff_escape(flag))}\b", text, re.MULTILINE), flag
    # The flags it documents as ignored really are ignored.
    for argv in (["-n"], ["-s"], ["-v"], ["-N", "/proc/1/ns/mnt"], ["-t", "s3mount"]):
        assert helper_arguments(["b", "/mnt", *argv]) == (["b", "/mnt"], False)
    assert helper_arguments(["b", "/mnt", "-f"]) == (["b", "/mnt"], True)


def test_helper_page_lists_the_dropped_mount_table_options() -> None:
    text = MOUNT_HELPER_8.read_text(encoding="utf-8")
    netdev = OPTION_BY_NAME["_netdev"]
    assert netdev.status is Status.IGNORED
    for name in (netdev.name, *netdev.aliases):
        assert re.search(rf"^\.BR {re.escape(roff_escape(name))}=? ,$", text, re.MULTILINE), name
    assert "x\\-systemd.automount" in text


# --------------------------------------------------------------------------
# The volume driver's page documents its flags, defaults and volume options


def test_volume_driver_page_documents_flags_defaults_and_keys() -> None:
    text = VOLUME_DRIVER_8.read_text(encoding="utf-8")
    flags = [flag for param in driver_command.params if isinstance(param, click.Option)
             for flag in (*param.opts, *param.secondary_opts)]
    assert "--state-dir" in flags
    for flag in flags:
        assert re.search(rf"^\.B[IR]? {re.escape(roff_escape(flag))}\b", text, re.MULTILINE), flag
    for default in (DEFAULT_SOCKET, DEFAULT_STATE_DIR, DEFAULT_MOUNT_ROOT):
        assert roff_escape(default) in text, default
    tags = "\n".join(re.findall(r"^\.TP\n(.*)$", text, re.MULTILINE))
    for key in (*CLOUD_FOUNDRY_KEYS, "bucket"):
        assert re.search(rf"(?<![\w\\-]){re.escape(roff_escape(key))}(?![\w\\-])", tags), key


# --------------------------------------------------------------------------
# Formatters


def test_mandoc_lint_reports_nothing() -> None:
    mandoc = tool("mandoc", "mandoc")
    result = run_tool(mandoc, "-T", "lint", "-W", "warning", *map(str, PAGES))
    assert result.returncode == 0 and result.stdout == "" and result.stderr == "", (
        result.stdout + result.stderr)


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_groff_prints_no_warnings(page: Path) -> None:
    groff = tool("groff", "groff-base")
    result = run_tool(groff, "-ww", "-man", "-Tutf8", str(page))
    assert result.returncode == 0, result.stderr
    assert result.stderr == "", result.stderr
    assert result.stdout.strip()


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_man_renders_the_page(page: Path) -> None:
    text = rendered(page)
    for heading in ("NAME", "SYNOPSIS", "DESCRIPTION", "EXIT STATUS", "SEE ALSO"):
        assert re.search(rf"^{heading}$", text, re.MULTILINE), heading


def test_s3mount_page_sections() -> None:
    text = rendered(S3MOUNT_1)
    for heading in ("OPTIONS", "CREDENTIALS", "ON-BUCKET FORMAT", "FSTAB AND SYSTEMD",
                    "ENVIRONMENT", "FILES", "EXAMPLES", "DIFFERENCES FROM POSIX"):
        assert re.search(rf"^{heading}$", text, re.MULTILINE), heading


def test_rendered_option_names_can_be_copied() -> None:
    """Option spellings come out as typed: ASCII hyphens, no hyphenation breaks."""
    text = rendered(S3MOUNT_1, width=200)
    for option in OPTIONS:
        if option.status in (Status.SUPPORTED, Status.IGNORED):
            spelling = option.name + (f"={option.metavar}" if option.metavar else "")
            assert re.search(rf"^ +{re.escape(spelling)}(?![\w-])", text, re.MULTILINE), spelling
    for typed in ("x-amz-meta-mode", "/etc/passwd-s3mount", "fusermount -u",
                  "S3MOUNT_MOUNTPOINT", "AWS_SECRET_ACCESS_KEY"):
        assert typed in text, typed
    narrow = rendered(S3MOUNT_1, width=60)
    assert "\u2010" not in narrow and not re.search(r"\w-\n", narrow), "hyphenated"
