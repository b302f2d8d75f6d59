"""The real promtool for the alert-rule tests: .venv/bin/promtool (put there by `make test`
through .ci/promtool), or on PATH; when neither is there, .ci/promtool fetches it."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="session")
def promtool() -> str:
    local = Path(sys.executable).parent / "promtool"
    if local.exists():
        return str(local)
    found = shutil.which("promtool")
    if found:
        return found
    done = subprocess.run([str(REPO / ".ci" / "promtool")], capture_output=True, text=True,
                          timeout=600, check=False)
    if done.returncode != 0 or not local.exists():
        pytest.fail(f"promtool is needed and could not be installed: {done.stderr.strip()}")
    return str(local)
