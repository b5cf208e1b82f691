"""What the tests in tests/slurm/ share: the cluster handle (submit, inspect and wait for jobs)
and small stage settings for the tiny model."""

from __future__ import annotations

import re
import subprocess
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from fixtures import LORA_METHOD, SMALL_DATA, tiny_model_overrides

REPO = Path(__file__).resolve().parents[2]
LOCAL_CLUSTER = REPO / "launch" / "slurm" / "local-cluster.sh"
FINISHED = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "OUT_OF_MEMORY",
    "BOOT_FAIL",
    "DEADLINE",
}
FIELD = re.compile(r"(\w+)=(\S*)")


@dataclass(frozen=True)
class Cluster:
    """The running cluster: its environment, and the commands the tests need."""

    env: dict[str, str]

    def run(
        self, *command: str | Path, check: bool = True, **kwargs
    ) -> subprocess.CompletedProcess:
        """Run a command from the checkout root with the cluster's environment."""
        env = {**self.env, **kwargs.pop("env", {})}
        result = subprocess.run(
            [str(c) for c in command],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=kwargs.pop("timeout", 120),
            **kwargs,
        )
        if check and result.returncode != 0:
            raise AssertionError(f"{command} failed ({result.returncode}):\n{result.stderr}")
        return result

    def sbatch(self, *args: str | Path, env: dict[str, str] | None = None) -> str:
        """Submit a job; its id."""
        return self.run("sbatch", "--parsable", *args, env=env or {}).stdout.strip().split(";")[0]

    def jobs(self, job_id: str) -> list[dict[str, str]]:
        """`scontrol show job` records of a job (one per array task)."""
        result = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return [dict(FIELD.findall(line)) for line in result.stdout.splitlines() if line.strip()]

    def wait(
        self, job_ids: Sequence[str], timeout: float = 480, on_poll=None
    ) -> dict[str, list[dict[str, str]]]:
        """Poll until every job (every array task) has finished; their records. `on_poll(records)`
        runs at each poll (a test may act on a running job)."""
        deadline = time.monotonic() + timeout
        while True:
            records = {job_id: self.jobs(job_id) for job_id in job_ids}
            if on_poll is not None:
                on_poll(records)
            if all(r and all(t["JobState"] in FINISHED for t in r) for r in records.values()):
                return records
            if time.monotonic() > deadline:
                queue = self.run("squeue", check=False).stdout
                raise AssertionError(f"jobs {job_ids} not finished after {timeout} s:\n{queue}")
            time.sleep(1)

    def states(self, job_id: str) -> list[str]:
        """JobState of each task of a job."""
        return [t["JobState"] for t in self.jobs(job_id)]


def cluster_is_up(env: dict[str, str]) -> bool:
    """True when SLURM_CONF names a cluster whose controller answers."""
    if not env.get("SLURM_CONF"):
        return False
    result = subprocess.run(["sinfo", "-h"], env=env, capture_output=True, timeout=30, check=False)
    return result.returncode == 0


def tiny_stage_overrides(model_dir: Path) -> list[str]:
    """The tiny model on CPU, and every stage small (a few seconds each on one core)."""
    return [
        *tiny_model_overrides(model_dir),
        LORA_METHOD,  # the real data stage: the tiny model answers nothing right (no probe fit)
        *SMALL_DATA,
        "train.batch_size=4",
        "train.micro_batch_size=2",
        "train.eval_batch_size=16",
        "train.progress=false",
        "lora.lora_dropout=0.1",
        "optim.lr=5e-3",
        "eval.n_boot=20",
        "eval.batch_size=8",
        "eval.verbalized.max_examples=4",
        "eval.verbalized.max_new_tokens=4",
        "eval.agreement_max_examples=8",
        "eval.token_temperature.steps=2",
        "eval.progress=false",
    ]
