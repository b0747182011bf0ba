"""The README's models table is generated (``python -m training.readme_table``), never typed: it must be current."""

from __future__ import annotations

import pytest

from tests.support.env import REPO
from training import readme_table


def test_readme_models_table_is_current(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(REPO)
    assert readme_table.main(["--check"]) == 0, "run: python -m training.readme_table"
