"""The benchmark's workloads, the data they use, and how their results are checked.

Each workload runs real programs (dd, ls, tar, mv) or a small Python loop (run
as a separate process, see the command line at the bottom) on a mount, and is
checked afterwards against the bucket directly (not through the mount). The
runner (run.py) provides the context: the mount point, the sizes, a botocore
client on the server, and ``command``/``helper`` to run a program with a
time-out.

    python bench/workloads.py small_create DIR COUNT
    python bench/workloads.py random_write FILE SIZE COUNT

run those loops alone and print {"seconds": ...}.
"""

from __future__ import annotations

import dataclasses
import json
import os
import random
import sys
import tarfile
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Protocol

MiB = 1024 * 1024
SMALL_FILE = 4096
RANDOM_BLOCK = 4096
SEED = 20240601
# What both programs store for a file and a directory written as root (s3fs's format).
FILE_META = {"mode": "33188", "uid": "0", "gid": "0"}
DIR_META = {"mode": "16877", "uid": "0", "gid": "0"}


@dataclasses.dataclass(frozen=True)
class Sizes:
    big_mib: int = 256  # seq_write, seq_read_*, random_write
    files: int = 1000  # small_create, ls_l_*, rename_dir
    random_writes: int = 100
    untar_files: int = 2000

    @property
    def big_bytes(self) -> int:
        return self.big_mib * MiB


FULL = Sizes()
QUICK = Sizes(big_mib=32, files=100, random_writes=100, untar_files=100)


class WorkloadError(Exception):
    """A workload failed: its program failed, timed out, or the bucket is wrong afterwards."""


@dataclasses.dataclass(frozen=True)
class Tarball:
    path: Path
    files: int
    dirs: int
    bytes: int
    sources: tuple[str, ...]


class Context(Protocol):
    """What a workload gets from the runner."""

    mnt: Path
    sizes: Sizes
    source: Path  # big_mib of random data, outside any mount
    tarball: Tarball
    bucket: str
    client: Any  # botocore S3 client talking to the server directly

    def command(self, argv: list[str], capture: bool = False) -> tuple[float, str, str]:
        """Run a program; (seconds, stdout, stderr). Raises WorkloadError."""
        ...

    def helper(self, *args: str) -> float:
        """Run this module's command line; the seconds it measured. Raises WorkloadError."""
        ...


@dataclasses.dataclass(frozen=True)
class Workload:
    name: str
    description: str
    run: Callable[[Context], float]  # seconds
    verify: Callable[[Context], None] | None = None
    needs: str | None = None  # "big" or "small": state the workload starts from
    produces: str | None = None
    consumes: str | None = None
    cold: bool = False  # remount and drop the kernel's caches first
    warm_after: str | None = None  # runs right after this one (else primed once)
    prepare: Callable[[Context], None] | None = None  # untimed, uncounted
    throughput: bool = False  # show MiB/s of the big file
    per_file: bool = False  # show requests per file


# --- Checks against the bucket ------------------------------------------------------------


def list_keys(ctx: Context, prefix: str) -> list[str]:
    keys: list[str] = []
    for page in ctx.client.get_paginator("list_objects_v2").paginate(Bucket=ctx.bucket,
                                                                      Prefix=prefix):
        keys.extend(item["Key"] for item in page.get("Contents", []))
    return keys


def check_files(ctx: Context, prefix: str, want: int) -> None:
    files = [key for key in list_keys(ctx, prefix) if not key.endswith("/")]
    if len(files) != want:
        raise WorkloadError(f"check: {len(files)} objects below {prefix}, not {want}")


def dd_bytes(stderr: str) -> int:
    for line in stderr.splitlines():
        if " bytes " in line:
            return int(line.split()[0])
    return -1


# --- Seeding the bucket directly (when the producing workload did not run) -----------------


def seed_big(ctx: Context) -> None:
    with open(ctx.source, "rb") as data:
        ctx.client.put_object(Bucket=ctx.bucket, Key="big", Body=data,
                              Metadata={**FILE_META, "mtime": str(int(time.time()))})


def small_body(index: int) -> bytes:
    return (f"{index:08d}" * (SMALL_FILE // 8)).encode()


def seed_small(ctx: Context) -> None:
    now = str(int(time.time()))
    ctx.client.put_object(Bucket=ctx.bucket, Key="small/", Body=b"",
                          ContentType="application/x-directory",
                          Metadata={**DIR_META, "mtime": now})

    def put(index: int) -> None:
        ctx.client.put_object(Bucket=ctx.bucket, Key=f"small/f{index:05d}",
                              Body=small_body(index), Metadata={**FILE_META, "mtime": now})

    with ThreadPoolExecutor(8) as pool:
        list(pool.map(put, range(ctx.sizes.files)))


SEEDS = {"big": seed_big, "small": seed_small}


# --- The workloads ----------------------------------------------------------------------------


def dd_write(ctx: Context) -> float:
    seconds, _, _ = ctx.command(["dd", f"if={ctx.source}", f"of={ctx.mnt / 'big'}", "bs=1M",
                                 f"count={ctx.sizes.big_mib}"])
    return seconds


def dd_read(ctx: Context) -> float:
    seconds, _, err = ctx.command(["dd", f"if={ctx.mnt / 'big'}", "of=/dev/null", "bs=1M"])
    if (got := dd_bytes(err)) != ctx.sizes.big_bytes:
        raise WorkloadError(f"dd read {got} bytes, not {ctx.sizes.big_bytes}: {err.strip()}")
    return seconds


def random_plan(size: int, count: int) -> list[tuple[int, bytes]]:
    """count distinct, block-aligned offsets in a file of size bytes, and what to write."""
    rng = random.Random(SEED)
    blocks = rng.sample(range(size // RANDOM_BLOCK), count)
    return [(block * RANDOM_BLOCK, rng.randbytes(RANDOM_BLOCK)) for block in blocks]


def random_write(ctx: Context) -> float:
    return ctx.helper("random_write", str(ctx.mnt / "big"), str(ctx.sizes.big_bytes),
                      str(ctx.sizes.random_writes))


def check_random_write(ctx: Context) -> None:
    expected = bytearray(ctx.source.read_bytes())
    plan = random_plan(ctx.sizes.big_bytes, ctx.sizes.random_writes)
    for offset, data in plan:
        expected[offset:offset + len(data)] = data
    compare_big(ctx, expected)


def compare_big(ctx: Context, expected: bytes | bytearray) -> None:
    """The whole object 'big', read from the server in one GET, is ``expected``."""
    got = ctx.client.get_object(Bucket=ctx.bucket, Key="big")["Body"].read()
    if got == expected:
        return
    if len(got) != len(expected):
        raise WorkloadError(f"check: object 'big' has {len(got)} bytes, not {len(expected)}")
    wrong = [offset for offset in range(0, len(got), RANDOM_BLOCK)
             if got[offset:offset + RANDOM_BLOCK] != expected[offset:offset + RANDOM_BLOCK]]
    raise WorkloadError(f"check: {len(wrong)} blocks of 4 KiB of 'big' hold the wrong data, "
                        f"the first at offset {wrong[0]}")


def check_seq_write(ctx: Context) -> None:
    compare_big(ctx, ctx.source.read_bytes())


def small_mkdir(ctx: Context) -> None:
    ctx.command(["mkdir", str(ctx.mnt / "small")])


def small_create(ctx: Context) -> float:
    return ctx.helper("small_create", str(ctx.mnt / "small"), str(ctx.sizes.files))


def ls_l(ctx: Context) -> float:
    seconds, out, _ = ctx.command(["ls", "-l", "--color=never", str(ctx.mnt / "small")],
                                  capture=True)
    entries = len(out.splitlines()) - 1  # "total N" first
    if entries != ctx.sizes.files:
        raise WorkloadError(f"ls -l showed {entries} entries, not {ctx.sizes.files}")
    return seconds


def untar(ctx: Context) -> float:
    seconds, _, _ = ctx.command(["tar", "-xf", str(ctx.tarball.path), "-C", str(ctx.mnt)])
    return seconds


def rename_dir(ctx: Context) -> float:
    seconds, _, _ = ctx.command(["mv", str(ctx.mnt / "small"), str(ctx.mnt / "small-renamed")])
    return seconds


def check_rename(ctx: Context) -> None:
    check_files(ctx, "small-renamed/", ctx.sizes.files)
    if left := list_keys(ctx, "small/"):
        raise WorkloadError(f"check: {len(left)} objects left below small/, e.g. {left[0]}")


WORKLOADS: list[Workload] = [
    Workload("seq_write", "dd a file of random data into the mount (bs=1M; close included)",
             dd_write, check_seq_write, produces="big", throughput=True),
    Workload("seq_read_cold", "dd the file to /dev/null after a remount and drop_caches",
             dd_read, needs="big", cold=True, throughput=True),
    Workload("seq_read_warm", "dd the file to /dev/null again", dd_read, needs="big",
             warm_after="seq_read_cold", throughput=True),
    Workload("random_write", "4 KiB writes at distinct random offsets of the file, then close",
             random_write, check_random_write, needs="big"),
    Workload("small_create", "create, write 4 KiB and close files in a new directory",
             small_create, lambda ctx: check_files(ctx, "small/", ctx.sizes.files),
             produces="small", prepare=small_mkdir, per_file=True),
    Workload("ls_l_cold", "ls -l of that directory after a remount and drop_caches", ls_l,
             needs="small", cold=True),
    Workload("ls_l_warm", "ls -l of that directory again", ls_l, needs="small",
             warm_after="ls_l_cold"),
    Workload("rename_dir", "mv of that directory", rename_dir, check_rename, needs="small",
             consumes="small"),
    Workload("untar", "tar -xf of a source tree (as root: owners, modes and times too)", untar,
             lambda ctx: check_files(ctx, "src/", ctx.tarball.files), per_file=True),
]
BY_NAME = {workload.name: workload for workload in WORKLOADS}


# --- The untar source tree --------------------------------------------------------------------


def tree_sources() -> list[Path]:
    """Python source trees on this machine: moto's package (from the venv), the stdlib."""
    sources = []
    try:
        import moto

        sources.append(Path(moto.__file__).parent)
    except ImportError:
        pass
    sources.append(Path(os.__file__).parent)
    return sources


def _walk(directory: Path):
    """Files below directory, in the order of ``tar --sort=name``: names sorted, files
    and subdirectories interleaved, each subdirectory's contents right after it."""
    for entry in sorted(os.scandir(directory), key=lambda e: e.name):
        if entry.name == "__pycache__" or entry.name.startswith(".") or entry.is_symlink():
            continue
        if entry.is_dir():
            if entry.name not in ("site-packages", "dist-packages"):
                yield from _walk(Path(entry.path))
        elif (entry.is_file() and not entry.name.endswith((".pyc", ".so"))
              and entry.stat().st_size <= MiB):
            yield Path(entry.path)


def build_tarball(dest: Path, count: int) -> Tarball:
    """A tar of the first ``count`` files of the source trees (no caches, none above
    1 MiB), laid out as tar makes it: each directory, then what is in it."""
    entries: list[tuple[str, Path | None]] = []  # (name in the tar, file or None: a dir)
    made: set[str] = set()
    files = total = 0
    for root in tree_sources():
        for path in _walk(root):
            name = f"src/{root.name}/{path.relative_to(root)}"
            parents = list(reversed(Path(name).parents[:-1]))  # "src", "src/moto", ...
            for parent in map(str, parents):
                if parent not in made:
                    made.add(parent)
                    entries.append((parent, None))
            entries.append((name, path))
            files += 1
            total += path.stat().st_size
            if files == count:
                break
        if files == count:
            break
    with tarfile.open(dest, "w", format=tarfile.GNU_FORMAT) as tar:
        for name, path in entries:
            info = tarfile.TarInfo(name)
            info.uname = info.gname = "root"
            if path is None:
                info.type, info.mode, info.mtime = tarfile.DIRTYPE, 0o755, 1_700_000_000
                tar.addfile(info)
                continue
            st = path.stat()
            info.size, info.mtime = st.st_size, int(st.st_mtime)
            info.mode = 0o755 if st.st_mode & 0o111 else 0o644
            with open(path, "rb") as data:
                tar.addfile(info, data)
    return Tarball(dest, files, len(made), total, tuple(str(root) for root in tree_sources()))


def make_source(path: Path, size: int) -> None:
    rng = random.Random(SEED)
    with open(path, "wb") as out:
        for _ in range(size // MiB):
            out.write(rng.randbytes(MiB))


# --- The Python loops, as separate processes --------------------------------------------------


def run_small_create(directory: str, count: int) -> float:
    start = time.perf_counter()
    for index in range(count):
        fd = os.open(os.path.join(directory, f"f{index:05d}"),
                     os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            os.write(fd, small_body(index))
        finally:
            os.close(fd)
    return time.perf_counter() - start


def run_random_write(path: str, size: int, count: int) -> float:
    plan = random_plan(size, count)
    start = time.perf_counter()
    fd = os.open(path, os.O_WRONLY)
    try:
        for offset, data in plan:
            if os.pwrite(fd, data, offset) != len(data):
                raise OSError(f"short write at {offset}")
    finally:
        os.close(fd)
    return time.perf_counter() - start


def main(argv: list[str]) -> int:
    if argv[:1] == ["small_create"] and len(argv) == 3:
        seconds = run_small_create(argv[1], int(argv[2]))
    elif argv[:1] == ["random_write"] and len(argv) == 4:
        seconds = run_random_write(argv[1], int(argv[2]), int(argv[3]))
    else:
        print(__doc__, file=sys.stderr)
        return 2
    print(json.dumps({"seconds": seconds}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
