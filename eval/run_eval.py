"""Eval stage entry script: a Hydra main over conf/eval.yaml.

calibtune eval [overrides]                                  # same thing, installed CLI
python eval/run_eval.py eval.data_dir=outputs/run/x/data eval.adapter=outputs/run/x/train
python eval/run_eval.py eval.data_dir=my_questions.jsonl eval.adapter=null   # base only, raw QA
"""

from __future__ import annotations

import hydra
from omegaconf import DictConfig

from calibtune.cli import report_user_errors
from calibtune.config import conf_dir
from calibtune.eval.stage import run_eval_stage


@hydra.main(version_base="1.3", config_path=str(conf_dir()), config_name="eval")
def main(cfg: DictConfig) -> None:
    """Hydra entry point: run the eval stage; a CalibtuneError exits 2 with one line."""
    report_user_errors("eval/run_eval.py", run_eval_stage, cfg)


if __name__ == "__main__":
    main()
