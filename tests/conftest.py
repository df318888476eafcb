"""Shared fixtures. Real-data tests read ../shared/data/100sic and skip visibly without it."""

from __future__ import annotations

from pathlib import Path

import pytest

from sportvlm_tui.storage import connect

REPO = Path(__file__).resolve().parents[1]
SAMPLE_DATA = REPO / "sample_data"
REAL_100SIC = (REPO / ".." / "shared" / "data" / "100sic").resolve()


@pytest.fixture
def db():
    """A migrated in-memory database."""
    return connect(":memory:")


@pytest.fixture
def db_path(tmp_path) -> Path:
    return tmp_path / "test.db"


@pytest.fixture
def real_100sic() -> Path:
    if not (REAL_100SIC / "sports.csv").exists():
        pytest.skip(f"real images not present at {REAL_100SIC}")
    return REAL_100SIC


@pytest.fixture(scope="session")
def tiny_loaded():
    """builtin:tiny loaded once per test session (fp32, CPU), through the real loading path."""
    from sportvlm_tui.model.loading import load_model

    return load_model("builtin:tiny", quant="fp32", device="cpu")
