"""The benchmark's account of the CPU time each process spends in a workload."""

from __future__ import annotations

import subprocess
import sys
import types
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "bench"))
import run  # bench/run.py, found through the path above

# A child that names itself like a process whose name would break a naive parse
# of /proc/PID/stat, burns CPU until its own clock says 0.3 s, and waits.
BUSY_CHILD = """
import ctypes, sys, time
ctypes.CDLL(None).prctl(15, b"a) b (c", 0, 0, 0)  # PR_SET_NAME
while time.process_time() < 0.3:
    pass
print("busy done", flush=True)
sys.stdin.read()
"""


@pytest.fixture
def busy_child() -> subprocess.Popen:
    child = subprocess.Popen([sys.executable, "-c", BUSY_CHILD], stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, text=True)
    try:
        assert child.stdout.readline() == "busy done\n"
        yield child
    finally:
        child.stdin.close()
        child.wait(timeout=10)


def test_cpu_seconds_counts_what_a_process_with_an_odd_name_spent(busy_child) -> None:
    assert Path(f"/proc/{busy_child.pid}/comm").read_text() == "a) b (c\n"
    spent = run.cpu_seconds(busy_child.pid)
    assert spent is not None and 0.29 <= spent < 5.0


def test_cpu_seconds_of_a_gone_or_unknown_process_is_none() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    assert run.cpu_seconds(child.pid) is None
    assert run.cpu_seconds(None) is None


def test_cpu_delta_leaves_out_a_process_it_could_not_read() -> None:
    before = {"daemon": 1.0, "server": 2.0, "relay": None}
    after = {"daemon": 1.25, "server": 2.5, "relay": 0.5}
    assert run.cpu_delta(before, after) == {"daemon": 0.25, "server": 0.5}


def test_the_cpu_table_shows_each_tools_medians_in_a_fixed_order() -> None:
    settings = types.SimpleNamespace(
        tools=["s3fs", "s3mount"],
        workloads=[types.SimpleNamespace(name="ls_l_cold"), types.SimpleNamespace(name="untar")])
    per_workload = {
        "ls_l_cold": {"s3mount": {"cpu": {"daemon": 0.35, "server": 1.16, "relay": 0.36}},
                      "s3fs": {"cpu": {"daemon": 0.24, "server": 1.08}}},
        "untar": {"s3mount": {"runs": 1, "ok": 0}, "s3fs": {}},
    }
    lines = run.cpu_table(settings, per_workload)
    assert "| workload | s3mount | s3fs |" in lines
    assert "| ls_l_cold | 0.35 / 1.16 / 0.36 | 0.24 / 1.08 / — |" in lines
    assert "| untar | — | — |" in lines
