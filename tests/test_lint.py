"""Lint: pyflakes errors and import order (pyproject's ``[tool.ruff]``) across the project's Python."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing() -> None:
    pytest.importorskip("ruff", reason="ruff comes with the dev extra: pip install -e '.[dev]'")
    r = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "kdasr", "tools", "tests", "recipes", "egs"],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr
