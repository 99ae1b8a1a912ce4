"""The layer rule, checked by import-linter on every test run."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_hold() -> None:
    """Domain imports nothing of the project; infra only the domain; shells never each other."""
    lint_imports = shutil.which("lint-imports") or str(Path(sys.executable).parent / "lint-imports")
    result = subprocess.run(
        [lint_imports, str(ROOT / "pyproject.toml")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


def test_the_domain_reads_no_clock_environment_or_randomness() -> None:
    """Time, env and randomness reach the domain through ports, never directly."""
    forbidden = (
        "datetime.now(",
        "utcnow(",
        "time.time(",
        "os.environ",
        "getenv(",
        "uuid4(",
        "secrets.",
    )
    offenders = [
        f"{path.relative_to(ROOT)}: {needle}"
        for path in (ROOT / "z4j_domain").rglob("*.py")
        if path.name != "testing.py"
        for needle in forbidden
        if needle in path.read_text()
    ]
    assert offenders == []
