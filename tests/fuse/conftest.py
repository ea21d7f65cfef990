import os
import shutil

import pytest


@pytest.fixture(scope="session", autouse=True)
def _fuse_available() -> None:
    if not os.path.exists("/dev/fuse") or shutil.which("fusermount") is None:
        pytest.exit("the mount tests need /dev/fuse and fusermount; 'make test' installs fuse",
                    returncode=3)
