"""Every benchmarks/*.py answers --help (argparse) without importing torch, and is listed in
docs/BENCHMARKS.md."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = sorted((ROOT / "benchmarks").glob("*.py"))
# Runs the script as __main__ with --help, then says whether torch got imported on the way.
PROBE = """
import runpy, sys
path = sys.argv[1]
sys.argv = [path, "--help"]
sys.path.insert(0, path.rsplit("/", 1)[0])
try:
    runpy.run_path(path, run_name="__main__")
    code = 0
except SystemExit as stop:
    code = stop.code or 0
print("torch imported:", "torch" in sys.modules)
sys.exit(code)
"""


def test_there_are_benchmarks():
    assert len(SCRIPTS) >= 5


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_help_is_cheap_and_prints_usage(script: Path):
    done = subprocess.run(
        [sys.executable, "-c", PROBE, str(script)],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=ROOT,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.startswith(f"usage: {script.name}"), done.stdout[:500]
    assert "torch imported: False" in done.stdout  # heavy imports wait until main has its args


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_listed_in_benchmarks_doc(script: Path):
    assert f"benchmarks/{script.name}" in (ROOT / "docs" / "BENCHMARKS.md").read_text()
