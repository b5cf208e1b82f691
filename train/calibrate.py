"""Calibration-tuning (train stage) entry script: a Hydra main over conf/train.yaml.

    calibtune train [overrides]                                           # same thing, installed CLI
    python train/calibrate.py [overrides]                                 # one process
    accelerate launch --config_file launch/accelerate/single_gpu.yaml train/calibrate.py [overrides]
    accelerate launch --config_file launch/accelerate/multi_gpu.yaml  train/calibrate.py run_dir=outputs/x
    torchrun --nproc_per_node 2 train/calibrate.py model.device=cpu run_dir=outputs/x   # 2 CPU procs (gloo)

Resume a run killed mid-way: re-run with the same run_dir (train.resume=auto is the default).
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from calibtune.cli import report_user_errors
from calibtune.config import conf_dir
from calibtune.train.recipe import run_train_stage


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="train")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: run the train stage; a CalibtuneError exits 2 with one line."""
    report_user_errors("train/calibrate.py", run_train_stage, cfg)


if __name__ == "__main__":
    main()
