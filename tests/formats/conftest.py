"""The ``real`` fixture: the folder of real sample files, or a skip that says where it should be."""

from __future__ import annotations

from pathlib import Path

import pytest
from format_kit import REAL


@pytest.fixture
def real() -> Path:
    if not REAL.is_dir():
        pytest.skip(f"the real sample files are not here ({REAL}); they live in the shared data folder")
    return REAL
