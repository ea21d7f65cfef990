import os
import shutil
from pathlib import Path

import pytest
from daemons import Daemons


@pytest.fixture(scope="session", autouse=True)
def _fuse_available() -> None:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount") is None:
        pytest.exit("the mount tests need /dev/fuse and fusermount; 'make test' installs fuse",
                    returncode=3)


@pytest.fixture
def daemons(tmp_path: Path, s3_server, passwd_file, daemon_env):
    """Daemons a test starts (and may kill) itself; the others are checked at its end."""
    running = Daemons(tmp_path, s3_server.url, passwd_file, daemon_env)
    yield running
    failures = running.close()
    assert not failures, "\n".join(failures)
