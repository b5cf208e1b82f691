"""The torchrun fixture launches again only when the ranks died by a signal, not on a Python
error, and says so."""

from __future__ import annotations

from pathlib import Path

import pytest
from fixtures.distributed import torchrun

pytestmark = pytest.mark.distributed
# rank 1 aborts (a C++-style death, no traceback) on the first launch only; rank 0 waits for it
FLAKY = """
import os, sys, time
from pathlib import Path
marker = Path("aborted")
if os.environ["RANK"] == "1" and not marker.exists():
    marker.write_text("x")
    os.abort()
if os.environ["RANK"] == "0" and not marker.exists():
    time.sleep(3)
Path(f"done{os.environ['RANK']}").write_text("ok")
"""


def test_a_signal_death_is_launched_again_and_warned(tmp_path: Path):
    script = tmp_path / "flaky.py"
    script.write_text(FLAKY)
    cleared = []
    with pytest.warns(UserWarning, match="died by a signal"):
        torchrun(2, [str(script)], {}, tmp_path, before_retry=lambda: cleared.append(True))
    assert cleared == [True] and (tmp_path / "done1").is_file()


def test_a_python_error_fails_without_a_second_launch(tmp_path: Path):
    script = tmp_path / "raises.py"
    script.write_text("raise SystemExit('bad input')\n")
    cleared = []
    with pytest.raises(pytest.fail.Exception, match="bad input"):
        torchrun(2, [str(script)], {}, tmp_path, before_retry=lambda: cleared.append(True))
    assert cleared == []
