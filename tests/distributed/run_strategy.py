"""Run under torchrun by test_strategies.py: for each method, train a run to the end, then copy
its mid-run checkpoint into a fresh run dir and resume from it there (train.resume=auto).

    torchrun --nproc_per_node 2 tests/distributed/run_strategy.py <spec.json>

spec.json: {"out": dir, "methods": [...], "overrides": [...], "checkpoint_step": N}."""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

import torch.distributed as torch_dist

from calibtune.config import compose
from calibtune.runtime import leave_process_group
from calibtune.train.recipe import run_train_stage


def method_overrides(overrides: list[str], method: str) -> list[str]:
    """The overrides that apply to `method` (probe has no lora: block; its head is trained in
    AdamW steps here, the path with steps, checkpoints and resume)."""
    if method == "probe":
        return [*(o for o in overrides if not o.startswith("lora.")), "probe.fit=adamw"]
    return overrides


def main(spec_path: str) -> None:
    """Full run and resumed run of each method, writing under spec["out"]/<method>/."""
    spec = json.loads(Path(spec_path).read_text())
    out = Path(spec["out"])
    for method in spec["methods"]:
        common = [*method_overrides(spec["overrides"], method), f"method={method}"]
        full = out / method / "full"
        run_train_stage(compose("train", [*common, f"run_dir={full}"]))
        resumed = out / method / "resumed"
        step_dir = f"train/checkpoints/step_{spec['checkpoint_step']}"
        if torch_dist.get_rank() == 0:
            shutil.copytree(full / step_dir, resumed / step_dir)
            # a stopped run resumes in its own dir, where the adapter it kept so far stays: the
            # full run's, when it was kept at or before the checkpoint (alora_head's step 0)
            best = json.loads((full / "train/manifest.json").read_text())["best"]["step"]
            if best is not None and best <= spec["checkpoint_step"]:
                shutil.copytree(full / "train/adapter", resumed / "train/adapter")
        torch_dist.barrier()
        run_train_stage(compose("train", [*common, f"run_dir={resumed}", "train.resume=auto"]))


if __name__ == "__main__":
    main(sys.argv[1])
    leave_process_group()
