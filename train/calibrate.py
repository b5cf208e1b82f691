"""Calibration-tuning (train stage) entry script: a Hydra main over conf/train.yaml.

    calibtune train [overrides]                                           # same thing, installed CLI
    python train/calibrate.py [overrides]                                 # one process
    accelerate launch --config_file launch/accelerate/single_gpu.yaml train/calibrate.py [overrides]
    accelerate launch --config_file launch/accelerate/multi_gpu.yaml  train/calibrate.py run_dir=outputs/x
    torchrun --nproc_per_node 2 train/calibrate.py model.device=cpu run_dir=outputs/x   # 2 CPU procs (gloo)

Resume a run killed mid-way: re-run with the same run_dir (train.resume=auto is the default).
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from calibtune.errors import CalibtuneError
from calibtune.train.recipe import run_train_stage

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="train")
def main(cfg: DictConfig) -> None:
    """Run the train stage; a CalibtuneError is printed as one line and exits with status 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_train_stage(cfg)
    except CalibtuneError as err:
        print(f"train/calibrate.py: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
