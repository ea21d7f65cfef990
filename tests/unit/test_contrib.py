"""Tests of contrib/: the systemd units pass systemd-analyze verify, every fstab
example parses with the real option parser and mount helper, and the README, the
units, the conf example and the Dockerfile agree on the S3MOUNT_* variables.

systemd-analyze is required, not optional: it comes with Debian's systemd package.
Nothing here mounts or starts a unit.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from s3mount.config import build_config
from s3mount.fstab import main as helper_main
from s3mount.options import parse_options

ROOT = Path(__file__).resolve().parents[2]
CONTRIB = ROOT / "contrib"
SYSTEMD = CONTRIB / "systemd"
TEMPLATE = SYSTEMD / "s3mount@.service"
MOUNT_UNIT = SYSTEMD / "mnt-data.mount"
AUTOMOUNT_UNIT = SYSTEMD / "mnt-data.automount"
DRIVER_UNIT = SYSTEMD / "s3mount-volume-driver.service"
EXAMPLE_CONF = SYSTEMD / "example.conf"
FSTAB_EXAMPLE = CONTRIB / "fstab.example"
DOCKERFILE = CONTRIB / "docker" / "Dockerfile"
README = ROOT / "README.md"

INSTALLED_S3MOUNT = "/usr/local/bin/s3mount"
S3MOUNT_VARIABLES = {"S3MOUNT_BUCKET", "S3MOUNT_MOUNTPOINT", "S3MOUNT_OPTIONS"}

# An fstab entry, commented out or not: source, mount point, type, options, dump, pass.
FSTAB_LINE = re.compile(
    r"^#?\s*(?P<source>\S+)\s+(?P<target>/\S*)\s+(?P<type>s3mount|fuse\.s3mount)\s+"
    r"(?P<options>\S+)\s+[0-9]\s+[0-9]\s*$", re.MULTILINE)


def unit_settings(path: Path) -> dict[str, list[str]]:
    """``Section.Key`` → values, in order (systemd allows a key more than once)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith(("#", ";")):
            continue
        if line.startswith("["):
            section = line.strip("[]")
            continue
        key, _, value = line.partition("=")
        settings.setdefault(f"{section}.{key.strip()}", []).append(value.strip())
    return settings


def environment_file(path: Path) -> dict[str, str]:
    """The assignments of a systemd EnvironmentFile, including commented-out ones."""
    variables = {}
    for line in path.read_text().splitlines():
        match = re.match(r"^#?([A-Z][A-Z0-9_]*)=(.*)$", line.strip())
        if match:
            variables[match.group(1)] = match.group(2)
    return variables


# --------------------------------------------------------------------------
# systemd-analyze verify


def s3mount_executable() -> str:
    """The s3mount command of the environment under test (the venv's), which stands in
    for /usr/local/bin/s3mount so that verify checks a command that exists."""
    candidate = Path(sys.executable).parent / "s3mount"
    if candidate.exists():
        return str(candidate)
    found = shutil.which("s3mount")
    assert found, "the s3mount command is not installed in this environment (pip install -e .)"
    return found


def verify(unit_files: list[Path], tmp_path: Path) -> str:
    """Run systemd-analyze verify on copies of the units; return everything it printed.

    The copies run the test environment's s3mount instead of /usr/local/bin/s3mount,
    and a MANPATH with this tree's man pages lets verify check Documentation=.
    Any output fails: verify exits 0 for unknown keys and unparsable values that
    systemd would ignore, and only says so on stderr.
    """
    analyze = shutil.which("systemd-analyze")
    assert analyze, "systemd-analyze is missing: apt-get install systemd"
    man_path = tmp_path / "man"
    for page in (ROOT / "man").glob("*.[18]"):
        section = man_path / f"man{page.suffix[1:]}"
        section.mkdir(parents=True, exist_ok=True)
        shutil.copy(page, section / page.name)
    units = tmp_path / "units"
    units.mkdir()
    copies = []
    for unit in unit_files:
        # The template is verified as an instance: a template itself cannot be loaded.
        name = unit.name.replace("@.", "@data.")
        copy = units / name
        copy.write_text(unit.read_text().replace(INSTALLED_S3MOUNT, s3mount_executable()))
        copies.append(str(copy))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LANG": "C.UTF-8",
           "MANPATH": str(man_path), "SYSTEMD_LOG_COLOR": "0", "SYSTEMD_PAGER": ""}
    result = subprocess.run([analyze, "verify", *copies], capture_output=True, text=True,
                            env=env, cwd=units, timeout=120, stdin=subprocess.DEVNULL)
    output = result.stdout + result.stderr
    if result.returncode != 0 and not output:
        output = f"systemd-analyze verify exited with {result.returncode}"
    return output


def test_units_pass_systemd_analyze_verify(tmp_path: Path) -> None:
    assert verify([TEMPLATE, MOUNT_UNIT, AUTOMOUNT_UNIT, DRIVER_UNIT], tmp_path) == ""


def test_verify_checks_the_driver_unit(tmp_path: Path) -> None:
    bad = tmp_path / DRIVER_UNIT.name
    bad.write_text(DRIVER_UNIT.read_text().replace("KillMode=process", "KillMode=proces"))
    (tmp_path / "check").mkdir()
    assert "kill mode" in verify([bad], tmp_path / "check")


@pytest.mark.parametrize(
    ("original", "broken"),
    [
        ("Type=notify", "Type=notfy"),
        ("Restart=on-failure", "Restrat=on-failure"),
        ("TimeoutStopSec=15min", "TimeoutStopSec=15 fortnights"),
        ("[Service]", "[Servic]"),
    ],
)
def test_verify_catches_a_broken_unit(tmp_path: Path, original: str, broken: str) -> None:
    text = TEMPLATE.read_text()
    assert original in text
    bad = tmp_path / "s3mount@.service"
    bad.write_text(text.replace(original, broken))
    (tmp_path / "check").mkdir()
    assert verify([bad], tmp_path / "check") != ""


def test_mount_unit_must_match_its_mount_point(tmp_path: Path) -> None:
    bad = tmp_path / "mnt-data.mount"
    bad.write_text(MOUNT_UNIT.read_text().replace("Where=/mnt/data", "Where=/mnt/other"))
    (tmp_path / "check").mkdir()
    assert "Where=" in verify([bad], tmp_path / "check")


# --------------------------------------------------------------------------
# What the units say


def test_service_template_settings() -> None:
    unit = unit_settings(TEMPLATE)
    assert unit["Unit.After"] == ["network-online.target"]
    assert unit["Unit.Wants"] == ["network-online.target"]
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.NotifyAccess"] == ["main"]
    assert unit["Service.EnvironmentFile"] == ["/etc/s3mount/%i.conf"]
    assert unit["Service.ExecStart"] == [f"{INSTALLED_S3MOUNT} -f"]
    assert unit["Service.ExecStop"] == ["-/bin/fusermount -u ${S3MOUNT_MOUNTPOINT}"]
    assert unit["Service.Restart"] == ["on-failure"]
    timeout = re.fullmatch(r"([0-9]+)min", unit["Service.TimeoutStopSec"][0])
    assert timeout and int(timeout.group(1)) >= 5, "uploads at stop need minutes"
    assert unit["Install.WantedBy"] == ["multi-user.target"]


def test_volume_driver_unit_settings() -> None:
    unit = unit_settings(DRIVER_UNIT)
    assert unit["Unit.Before"] == ["docker.service"]
    assert unit["Unit.After"] == ["network-online.target"]
    # The driver says READY=1 once its socket accepts requests.
    assert unit["Service.Type"] == ["notify"]
    assert unit["Service.ExecStart"] == [f"{INSTALLED_S3MOUNT}-volume-driver"]
    # Stopping or restarting the driver must not kill the volumes' daemons.
    assert unit["Service.KillMode"] == ["process"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]
    assert "man:s3mount-volume-driver(8)" in unit["Unit.Documentation"][0]


def test_mount_units() -> None:
    mount = unit_settings(MOUNT_UNIT)
    automount = unit_settings(AUTOMOUNT_UNIT)
    assert mount["Mount.What"] == ["mybucket"]
    assert mount["Mount.Where"] == automount["Automount.Where"] == ["/mnt/data"]
    assert mount["Mount.Type"] == ["s3mount"]
    assert "TimeoutIdleSec" in " ".join(automount)
    # The options reach the same helper and parser as fstab's.
    options = mount["Mount.Options"][0]
    assert options == "_netdev,allow_other,passwd_file=/etc/passwd-s3mount"
    assert_helper_accepts("mybucket", "/mnt/data", options)


def test_conf_example_configures_a_mount() -> None:
    variables = environment_file(EXAMPLE_CONF)
    assert set(variables) == S3MOUNT_VARIABLES | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
    env = {k: v for k, v in variables.items() if k.startswith("S3MOUNT_")}
    # What ExecStart=s3mount -f does with the file's variables and no arguments.
    config = build_config([], [], foreground=True, debug=False, single_threaded=False,
                          environ=env)
    assert config.bucket == variables["S3MOUNT_BUCKET"]
    assert config.mountpoint == variables["S3MOUNT_MOUNTPOINT"]
    assert config.settings.allow_other


def test_readme_names_the_variables_the_units_use() -> None:
    readme = README.read_text()
    section = readme.partition("## Running at boot: fstab and systemd")[2].partition("\n## ")[0]
    assert section, "README lacks the section 'Running at boot: fstab and systemd'"
    for name in S3MOUNT_VARIABLES | {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}:
        assert f"`{name}=`" in section, name
    assert "systemctl enable --now s3mount@data" in section
    assert "/etc/s3mount/data.conf" in section
    unit_text = TEMPLATE.read_text()
    for name in set(re.findall(r"\$\{?(\w+)", unit_text)):
        assert name in S3MOUNT_VARIABLES, name


def test_dockerfile_and_readme_agree_on_the_variables() -> None:
    dockerfile = DOCKERFILE.read_text()
    assert re.search(r'^ENTRYPOINT \[.*"/usr/local/bin/s3mount", "-f"\]$', dockerfile,
                     re.MULTILINE)
    containers = README.read_text().partition("## Containers")[2].partition("\n## ")[0]
    assert containers, "README lacks the section 'Containers'"
    documented = set(re.findall(r"\bS3MOUNT_[A-Z]+\b", containers))
    assert documented == S3MOUNT_VARIABLES
    assert set(re.findall(r"\bS3MOUNT_[A-Z]+\b", dockerfile)) == S3MOUNT_VARIABLES
    for needed in ("--device /dev/fuse", "--cap-add SYS_ADMIN", "apparmor:unconfined",
                   "rshared", "bind-propagation=rshared"):
        assert needed in containers, needed


# --------------------------------------------------------------------------
# fstab examples, wherever they are written


def assert_helper_accepts(source: str, target: str, options: str) -> None:
    """mount.s3mount in fake mode (mount -f): the arguments and options parse."""
    parse_options([options])
    with pytest.raises(SystemExit) as info:
        helper_main([source, target, "-f", "-o", options])
    assert info.value.code in (0, None), f"{source} {target} {options}"


def fstab_entries(text: str) -> list[tuple[str, str, str, str]]:
    return [(m["source"], m["target"], m["type"], m["options"])
            for m in FSTAB_LINE.finditer(text.replace("\\-", "-"))]


def test_fstab_example_entries_parse(capsys: pytest.CaptureFixture[str]) -> None:
    entries = fstab_entries(FSTAB_EXAMPLE.read_text())
    assert len(entries) >= 7
    for source, target, _, options in entries:
        assert_helper_accepts(source, target, options)
    assert capsys.readouterr().err == ""


def test_fstab_example_covers_the_documented_cases() -> None:
    entries = fstab_entries(FSTAB_EXAMPLE.read_text())
    types = {entry[2] for entry in entries}
    assert types == {"s3mount", "fuse.s3mount"}
    options = [set(re.sub(r"=[^,]*", "=", entry[3]).split(",")) for entry in entries]

    def some_entry_has(*names: str) -> bool:
        return any(set(names) <= entry for entry in options)

    assert some_entry_has("url=", "use_path_request_style", "ca_bundle=")
    assert some_entry_has("ro")
    assert some_entry_has("user", "noauto", "uid=", "gid=", "umask=")
    assert some_entry_has("nofail", "_netdev", "x-systemd.automount")
    assert any(":/" in entry[0] for entry in entries)
    assert any("url=https://" in entry[3] for entry in entries)


@pytest.mark.parametrize("path", [README, ROOT / "man" / "s3mount.1",
                                  ROOT / "man" / "mount.s3mount.8"], ids=lambda p: p.name)
def test_fstab_lines_in_the_docs_parse(path: Path) -> None:
    entries = fstab_entries(path.read_text())
    assert entries
    for source, target, _, options in entries:
        assert_helper_accepts(source, target, options)


def test_readme_has_both_fstab_forms() -> None:
    readme = README.read_text()
    assert ("mybucket /mnt/data s3mount _netdev,allow_other,passwd_file=/etc/passwd-s3mount 0 0"
            in readme)
    assert "mybucket /mnt/data fuse.s3mount _netdev,allow_other 0 0" in readme
