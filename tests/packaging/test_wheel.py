"""The built wheel works without a checkout: configs ship inside the package, `calibtune run`
composes and a smoke run on the tiny model finishes, from a fresh venv outside the repository.

Third-party packages come from the test's own environment (a .pth line in the fresh venv), so
only calibtune itself is installed, from the wheel (`pip install --no-deps`)."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest
from fixtures import LORA_METHOD, tiny_overrides_for

REPO = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(args: list[str], cwd: Path, timeout: int = 300) -> subprocess.CompletedProcess:
    """Run a command with no PYTHONPATH / CALIBTUNE_CONF pointing back into the checkout."""
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "CALIBTUNE_CONF")}
    env |= {"HF_HUB_OFFLINE": "1", "WANDB_MODE": "offline", "PYTHONNOUSERSITE": "1"}
    result = subprocess.run(
        args, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout, check=False
    )
    assert result.returncode == 0, f"{args}\n{result.stdout[-2000:]}\n{result.stderr[-4000:]}"
    return result


@pytest.fixture(scope="module")
def wheel_venv(tmp_path_factory) -> Path:
    """A fresh venv outside the checkout with calibtune installed from a freshly built wheel."""
    root = tmp_path_factory.mktemp("wheel")
    source = root / "source"  # a copy: setuptools writes build/ and *.egg-info beside the source
    skip = (".git", ".venv", "build", "dist", "outputs", "multirun", "wandb", "*.egg-info")
    shutil.copytree(REPO, source, ignore=shutil.ignore_patterns(*skip, "__pycache__", ".*_cache"))
    run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q"]
        + ["-w", str(root / "dist"), str(source)],
        cwd=root,
    )
    (wheel,) = (root / "dist").glob("calibtune-*.whl")
    venv = root / "venv"
    run([sys.executable, "-m", "venv", "--without-pip", str(venv)], cwd=root)
    python = venv / "bin" / "python"
    site = run(
        [str(python), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], root
    )
    # third-party packages from this environment (its .pth files, e.g. an editable calibtune,
    # are not processed for a directory added this way)
    Path(site.stdout.strip(), "shared-deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    run(
        [sys.executable, "-m", "pip", "--python", str(python), "install", "-q", "--no-deps"]
        + [str(wheel)],
        cwd=root,
    )
    return venv


def test_calibtune_comes_from_the_wheel_outside_the_checkout(wheel_venv, tmp_path):
    probe = "import calibtune, calibtune.config as c, os; print(calibtune.__file__); print(c.conf_dir()); print(os.getcwd())"
    out = run([str(wheel_venv / "bin" / "python"), "-c", probe], cwd=tmp_path).stdout.split()
    module, conf, cwd = (Path(p) for p in out)
    assert module.is_relative_to(wheel_venv) and conf.is_relative_to(wheel_venv)
    assert not cwd.is_relative_to(REPO) and not module.is_relative_to(REPO)
    result = run(
        [str(wheel_venv / "bin" / "calibtune"), "run", "preset=smoke", "--cfg", "job"], tmp_path
    )
    assert "stage: run" in result.stdout and "n_examples: 400" in result.stdout


def test_smoke_run_from_the_wheel(wheel_venv, tiny_model_dir, tmp_path):
    run_dir = tmp_path / "smoke"
    overrides = [
        "preset=smoke",
        *tiny_overrides_for(tiny_model_dir, run_dir),
        LORA_METHOD,  # the tiny model answers nothing right: no labels for the default probe
        "data.n_examples=30",
        "data.val_size=10",
        "data.test_size=10",
        "eval.recalibrators=[temperature]",
        "eval.token_temperature.steps=2",
        "data.max_new_tokens=4",
        "train.batch_size=8",
        "train.micro_batch_size=8",
        "train.max_steps=2",
        "train.progress=false",
        "eval.n_boot=20",
        "eval.verbalized.enabled=false",
        "eval.agreement_max_examples=4",
        "eval.progress=false",
        "data.progress=false",
    ]
    result = run([str(wheel_venv / "bin" / "calibtune"), "run", *overrides], cwd=tmp_path)
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["n_test"] > 0 and "tuned/ptrue" in metrics["methods"]
    assert (run_dir / "train" / "adapter" / "adapter_config.json").is_file()
    assert "answer agreement" in result.stdout
