"""Eval stage entry script: a Hydra main over conf/eval.yaml.

calibtune eval [overrides]                                  # same thing, installed CLI
python eval/run_eval.py eval.data_dir=outputs/run/x/data eval.adapter=outputs/run/x/train
python eval/run_eval.py eval.data_dir=my_questions.jsonl eval.adapter=null   # base only, raw QA
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

import hydra
from omegaconf import DictConfig

from calibtune.errors import CalibtuneError
from calibtune.eval.stage import run_eval_stage

CONF_DIR = str(Path(__file__).resolve().parents[1] / "conf")


@hydra.main(version_base="1.3", config_path=CONF_DIR, config_name="eval")
def main(cfg: DictConfig) -> None:
    """Run the eval stage; a CalibtuneError is printed as one line and exits with status 2."""
    logging.basicConfig(
        level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    try:
        run_eval_stage(cfg)
    except CalibtuneError as err:
        print(f"eval/run_eval.py: error: {err}", file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
