"""Fixtures shared by the tests of the Store and Transfer layer."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from s3mount.transfer import Transfer


@pytest.fixture
def transfers() -> Iterator[list[Transfer]]:
    """Transfers a test makes; closed at its end."""
    made: list[Transfer] = []
    yield made
    for transfer in made:
        transfer.close()
