"""Real programs at work inside a mount: git, tar, rsync, sqlite3 and cp -a.

Each test checks the result through the mount, and where it matters against the
bucket with botocore or through a fresh mount (unmount and mount again), so
that what is checked is what s3mount stored, not what it still had cached.
"""

from __future__ import annotations

import os
import random
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

STDLIB = Path(os.path.dirname(os.__file__))
PROJECT = Path(__file__).resolve().parents[2]
# Python packages for the tarball: a few hundred files, several directory levels.
STDLIB_PACKAGES = ("email", "json", "xml", "importlib", "logging", "http", "unittest",
                   "asyncio", "urllib", "concurrent")


def need(program: str, package: str) -> str:
    path = shutil.which(program)
    if path is None:
        pytest.fail(f"{program} is not installed: 'make test' installs it "
                    f"(Debian package {package})")
    return path


def run(*argv: str, cwd: Path | None = None, env: dict[str, str] | None = None,
        input: str | None = None, timeout: float = 120) -> str:
    """Run a program; it must succeed. Returns its stdout."""
    result = subprocess.run(argv, cwd=cwd, env=env, input=input, capture_output=True,
                            text=True, timeout=timeout)
    assert result.returncode == 0, (
        f"{' '.join(argv)} exited with {result.returncode}\n"
        f"stdout: {result.stdout[-3000:]}\nstderr: {result.stderr[-3000:]}")
    return result.stdout


def remount(mount, m, bucket: str, *options: str):
    """A fresh view: unmount (the daemon must exit 0) and mount the bucket again."""
    assert m.stop() == 0, m.log()
    return mount(bucket, *options, mountpoint=m.path)


def entries(root: Path) -> dict[str, os.stat_result]:
    """lstat of every entry below root, by relative path (root itself excluded)."""
    found = {}
    for directory, dirs, files in os.walk(root):
        for name in dirs + files:
            path = os.path.join(directory, name)
            found[os.path.relpath(path, root)] = os.lstat(path)
    return found


def assert_same_metadata(original: Path, copy: Path, *, modes: bool = True) -> None:
    """Type, mode, owner, size and mtime (to the nanosecond) of every entry agree."""
    want, got = entries(original), entries(copy)
    assert sorted(got) == sorted(want)
    for name, a in want.items():
        b = got[name]
        where = f"{copy / name}"
        assert stat.S_IFMT(b.st_mode) == stat.S_IFMT(a.st_mode), where
        if modes:
            assert oct(stat.S_IMODE(b.st_mode)) == oct(stat.S_IMODE(a.st_mode)), where
        assert (b.st_uid, b.st_gid) == (a.st_uid, a.st_gid), where
        if not stat.S_ISDIR(a.st_mode):
            assert b.st_size == a.st_size, where
        assert b.st_mtime_ns == a.st_mtime_ns, where
        if stat.S_ISLNK(a.st_mode):
            assert os.readlink(copy / name) == os.readlink(original / name), where


def assert_no_diff(a: Path, b: Path) -> None:
    result = subprocess.run(["diff", "-r", "--no-dereference", str(a), str(b)],
                            capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stdout, result.stderr) == (0, "", "")


def make_local_tree(root: Path) -> Path:
    """A small tree on local disk with varied modes, owners, times and symlinks."""
    rng = random.Random(5)
    root.mkdir()
    (root / "sub/deeper/deepest").mkdir(parents=True)
    (root / "private").mkdir(mode=0o700)
    (root / "empty-dir").mkdir()
    files = {
        "readme.txt": (b"read me\n", 0o644),
        "script.sh": (b"#!/bin/sh\necho hi\n", 0o755),
        "secret": (b"s3cr3t", 0o600),
        "readonly.dat": (rng.randbytes(1000), 0o444),
        "empty": (b"", 0o640),
        "sub/data.bin": (rng.randbytes(300_000), 0o644),
        "sub/deeper/notes.md": (b"# notes\n" * 50, 0o664),
        "sub/deeper/deepest/leaf": (b"leaf", 0o400),
        "private/key": (b"key", 0o600),
    }
    for name, (body, mode) in files.items():
        path = root / name
        path.write_bytes(body)
        path.chmod(mode)
    os.symlink("sub/data.bin", root / "link-to-file")
    os.symlink("sub/deeper", root / "link-to-dir")
    os.symlink("../nowhere", root / "sub/dangling")
    os.chown(root / "secret", 1234, 5678)
    os.chown(root / "private", 42, 43)
    os.chown(root / "link-to-file", 1234, 5678, follow_symlinks=False)
    # Times: files, links and directories (deepest first: a child changes its parent).
    stamp = 1_600_000_000_123_456_789
    for number, (directory, dirs, names) in enumerate(sorted(os.walk(root), reverse=True)):
        for name in dirs + names:
            path = os.path.join(directory, name)
            when = stamp + number * 86_400 * 10**9 + len(name) * 1_000_000_007
            os.utime(path, ns=(when, when), follow_symlinks=False)
    (root / "private").chmod(0o750)
    os.utime(root / "private", ns=(stamp, stamp))
    return root


# --- git ----------------------------------------------------------------------------


def test_git_init_add_commit_log_fsck(bucket, mount, tmp_path):
    need("git", "git")
    home = tmp_path / "githome"
    home.mkdir()
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
           "GIT_CONFIG_NOSYSTEM": "1", "LANG": "C.UTF-8"}
    git = ["git", "-c", "user.name=Test Er", "-c", "user.email=tester@example.com",
           "-c", "init.defaultBranch=main"]
    m = mount(bucket)
    repo = m.path / "repo"
    repo.mkdir()
    run(*git, "init", "-q", cwd=repo, env=env)
    (repo / "README.md").write_text("# s3mount test repository\n")
    (repo / "src").mkdir()
    (repo / "src/main.py").write_text("print('hello')\n" * 20)
    (repo / "src/run.sh").write_text("#!/bin/sh\nexec python3 main.py\n")
    (repo / "src/run.sh").chmod(0o755)
    (repo / "data.bin").write_bytes(random.Random(3).randbytes(100_000))
    os.symlink("src/main.py", repo / "main-link")
    run(*git, "add", "-A", cwd=repo, env=env)
    run(*git, "commit", "-q", "-m", "first commit", cwd=repo, env=env)
    (repo / "src/main.py").write_text("print('hello, world')\n")
    (repo / "CHANGES").write_text("second\n")
    run(*git, "add", "-A", cwd=repo, env=env)
    run(*git, "commit", "-q", "-m", "second commit", cwd=repo, env=env)

    def check(repo: Path) -> None:
        assert run(*git, "log", "--format=%s", cwd=repo, env=env).splitlines() == [
            "second commit", "first commit"]
        assert run(*git, "status", "--porcelain", cwd=repo, env=env) == ""
        run(*git, "fsck", "--full", "--strict", "--no-progress", cwd=repo, env=env)
        files = run(*git, "ls-tree", "-r", "--format=%(objectmode) %(path)", "HEAD",
                    cwd=repo, env=env).splitlines()
        assert sorted(files) == ["100644 CHANGES", "100644 README.md", "100644 data.bin",
                                 "100644 src/main.py", "100755 src/run.sh",
                                 "120000 main-link"]
        assert run(*git, "show", "HEAD~1:src/main.py", cwd=repo,
                   env=env) == "print('hello')\n" * 20
        assert run(*git, "diff", "--stat", "HEAD~1", "HEAD", cwd=repo, env=env).strip(
            ).endswith("2 files changed, 2 insertions(+), 20 deletions(-)")

    check(repo)
    # Packing: git writes a pack and its index, then deletes the loose objects.
    run(*git, "gc", "-q", cwd=repo, env=env)
    assert not list((repo / ".git/objects").glob("[0-9a-f][0-9a-f]/*"))
    assert len(list((repo / ".git/objects/pack").glob("pack-*.pack"))) == 1
    check(repo)
    # Git's own view after a remount: everything was stored, nothing is left dirty.
    m = remount(mount, m, bucket)
    check(m.path / "repo")


# --- tar ----------------------------------------------------------------------------


def stage_source_tree(root: Path) -> Path:
    """Real source files (Python packages and this project) plus symlinks."""
    src = root / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc")
    for package in STDLIB_PACKAGES:
        shutil.copytree(STDLIB / package, src / "stdlib" / package, symlinks=True,
                        ignore=ignore)
    for part in ("s3mount", "tests"):
        shutil.copytree(PROJECT / part, src / "project" / part, symlinks=True, ignore=ignore)
    (src / "project/README.md").write_bytes((PROJECT / "README.md").read_bytes())
    os.symlink("stdlib/json/__init__.py", src / "json-init")
    os.symlink("../../stdlib/xml", src / "project/tests/xml-link")
    os.symlink("does/not/exist", src / "dangling")
    (src / "stdlib/email/mime/deep/er/still").mkdir(parents=True)
    (src / "stdlib/email/mime/deep/er/still/tool").write_text("#!/bin/sh\n")
    (src / "stdlib/email/mime/deep/er/still/tool").chmod(0o750)
    return src


def test_tar_extract_of_a_source_tree(s3, bucket, mount, tmp_path):
    staging = tmp_path / "staging"
    src = stage_source_tree(staging)
    files = [p for p in src.rglob("*") if p.is_file() and not p.is_symlink()]
    assert len(files) > 200
    tarball = tmp_path / "src.tar.gz"
    # POSIX (pax) format: times with nanoseconds.
    run("tar", "--format=posix", "-C", str(staging), "-czf", str(tarball), "src")

    m = mount(bucket)
    run("tar", "-C", str(m.path), "-xzf", str(tarball))
    assert_no_diff(src, m.path / "src")
    assert_same_metadata(src, m.path / "src")

    # One file's bytes and attributes, straight from the bucket.
    local = src / "stdlib/email/message.py"
    obj = s3.get_object(Bucket=bucket, Key="src/stdlib/email/message.py")
    assert obj["Body"].read() == local.read_bytes()
    assert obj["Metadata"]["mode"] == str(local.stat().st_mode)
    link = s3.get_object(Bucket=bucket, Key="src/json-init")
    assert link["Body"].read() == b"stdlib/json/__init__.py"

    # And the same from a fresh mount.
    m = remount(mount, m, bucket)
    assert_no_diff(src, m.path / "src")
    assert_same_metadata(src, m.path / "src")
    # tar reads it back: a tarball made from the mount lists the same entries.
    again = tmp_path / "again.tar"
    run("tar", "--format=posix", "-C", str(m.path), "-cf", str(again), "src")
    def listing(archive: Path) -> list[str]:
        # tar pads its columns to the widest value seen so far; compare the fields.
        lines = run("tar", "--full-time", "-tvf", str(archive)).splitlines()
        return sorted(" ".join(line.split()) for line in lines)

    assert listing(again) == listing(tarball)


# --- rsync --------------------------------------------------------------------------


def test_rsync_round_trip(bucket, mount, tmp_path):
    need("rsync", "rsync")
    src = make_local_tree(tmp_path / "src")
    m = mount(bucket)
    there, back = m.path / "dst", tmp_path / "back"
    # rsync writes each file to a temporary name, sets its attributes, then renames it.
    run("rsync", "-a", f"{src}/", f"{there}/")
    assert_no_diff(src, there)
    assert_same_metadata(src, there)
    # A second run finds nothing to do: sizes, times, modes and owners all match.
    assert run("rsync", "-ai", f"{src}/", f"{there}/") == ""

    m = remount(mount, m, bucket)
    run("rsync", "-a", f"{there}/", f"{back}/")
    assert_no_diff(src, back)
    assert_same_metadata(src, back)
    assert_same_metadata(src, there)
    assert run("rsync", "-ai", f"{src}/", f"{there}/") == ""

    # An update: rsync replaces a changed file (rename over an existing object).
    (src / "sub/data.bin").write_bytes(b"changed" * 1000)
    os.utime(src / "sub/data.bin", ns=(1_700_000_000_000_000_001,) * 2)
    changes = run("rsync", "-ai", f"{src}/", f"{there}/").splitlines()
    assert changes == [">f.st...... sub/data.bin"]
    assert (there / "sub/data.bin").read_bytes() == b"changed" * 1000
    assert_same_metadata(src, there)


# --- sqlite3 ------------------------------------------------------------------------


def test_sqlite_database(s3, bucket, mount):
    need("sqlite3", "sqlite3")
    m = mount(bucket)
    (m.path / "db").mkdir()
    db = m.path / "db/test.db"
    rows = "\n".join(f"INSERT INTO t(name, n) VALUES ('row {i} {'x' * (i % 200)}', {i});"
                     for i in range(1, 1001))
    script = ("CREATE TABLE t(id INTEGER PRIMARY KEY, name TEXT NOT NULL, n INTEGER);\n"
              f"BEGIN;\n{rows}\nCOMMIT;\n"
              "CREATE INDEX t_n ON t(n);\n"
              "SELECT count(*), sum(n) FROM t;\n")
    assert run("sqlite3", str(db), input=script).split() == ["1000|500500"]
    query = "SELECT count(*), sum(n), max(length(name)) FROM t; PRAGMA integrity_check;"
    # A new process opens the database again.
    longest = max(len(f"row {i} {'x' * (i % 200)}") for i in range(1, 1001))
    assert run("sqlite3", str(db), query).split() == [f"1000|500500|{longest}", "ok"]
    # The rollback journal is gone, from the directory and from the bucket.
    assert os.listdir(m.path / "db") == ["test.db"]
    keys = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket, Prefix="db/")["Contents"]]
    assert sorted(keys) == ["db/", "db/test.db"]
    size = os.stat(db).st_size
    assert size > 100_000
    body = s3.get_object(Bucket=bucket, Key="db/test.db")["Body"].read()
    assert len(body) == size and body.startswith(b"SQLite format 3\0")

    # An update in a second transaction, then a fresh mount.
    run("sqlite3", str(db), "BEGIN; UPDATE t SET n = n * 2 WHERE id <= 500; "
        "DELETE FROM t WHERE id > 900; COMMIT;")
    m = remount(mount, m, bucket)
    db = m.path / "db/test.db"
    assert run("sqlite3", str(db), "SELECT count(*), sum(n) FROM t; PRAGMA integrity_check;"
               ).split() == [f"900|{sum(range(1, 501)) * 2 + sum(range(501, 901))}", "ok"]
    assert run("sqlite3", str(db), "SELECT name FROM t WHERE n = 1000;").strip() == (
        "row 500 " + "x" * 100)


# --- cp -a --------------------------------------------------------------------------


def test_cp_archive_preserves_owners_times_and_xattrs(bucket, mount, tmp_path):
    src = make_local_tree(tmp_path / "src")
    os.setxattr(src / "readme.txt", "user.origin", b"local\x00disk")
    m = mount(bucket)
    run("cp", "-a", str(src), str(m.path / "copy"))
    assert_no_diff(src, m.path / "copy")
    # The modes are test_cp_archive_preserves_modes's (an s3mount bug).
    assert_same_metadata(src, m.path / "copy", modes=False)
    assert os.getxattr(m.path / "copy/readme.txt", "user.origin") == b"local\x00disk"

    m = remount(mount, m, bucket)
    assert_no_diff(src, m.path / "copy")
    assert_same_metadata(src, m.path / "copy", modes=False)
    assert os.getxattr(m.path / "copy/readme.txt", "user.origin") == b"local\x00disk"
    # The owners really are the stored ones, not the mounting user.
    assert os.stat(m.path / "copy/secret").st_uid == 1234
    assert os.stat(m.path / "copy/private").st_gid == 43


def test_cp_archive_preserves_modes(bucket, mount, tmp_path):
    """GNU cp -a creates each entry with mode 0700/0600, then copies the permissions as
    a POSIX ACL (setxattr system.posix_acl_access) and calls chmod only if that fails.
    A filesystem must then show the ACL's mode bits, or refuse the ACL (EOPNOTSUPP),
    which makes cp fall back to chmod."""
    src = make_local_tree(tmp_path / "src")
    m = mount(bucket)
    run("cp", "-a", str(src), str(m.path / "copy"))
    modes = {name: oct(stat.S_IMODE(st.st_mode)) for name, st in entries(src).items()
             if not stat.S_ISLNK(st.st_mode)}
    assert {name: oct(stat.S_IMODE(st.st_mode))
            for name, st in entries(m.path / "copy").items()
            if not stat.S_ISLNK(st.st_mode)} == modes
