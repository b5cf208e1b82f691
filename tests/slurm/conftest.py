"""A real one-node SLURM cluster for the tests in tests/slurm/ (`make test-slurm`).

`make test-slurm` starts the cluster with launch/slurm/local-cluster.sh and exports SLURM_CONF;
run on their own (`pytest -m slurm tests/slurm`) the tests start one themselves and always stop
it at the end of the session. Jobs are submitted from the checkout root with this checkout's
code first on PYTHONPATH, so they run the code under test."""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
from slurm_helpers import LOCAL_CLUSTER, REPO, Cluster, cluster_is_up


@pytest.fixture(scope="session")
def slurm(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """The cluster `make test-slurm` started, or one started (and stopped) here."""
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(
            filter(None, [str(REPO / "src"), os.environ.get("PYTHONPATH")])
        ),
        "HF_HUB_OFFLINE": "1",
        "WANDB_MODE": "offline",
        "TOKENIZERS_PARALLELISM": "false",
    }
    if cluster_is_up(env):
        yield Cluster(env)
        return
    env["CALIBTUNE_SLURM_HOME"] = str(tmp_path_factory.mktemp("slurm") / "cluster")
    subprocess.run([str(LOCAL_CLUSTER), "up"], env=env, check=True, timeout=900)
    try:
        env["SLURM_CONF"] = str(Path(env["CALIBTUNE_SLURM_HOME"]) / "slurm.conf")
        yield Cluster(env)
    finally:
        subprocess.run([str(LOCAL_CLUSTER), "down"], env=env, check=False, timeout=300)
