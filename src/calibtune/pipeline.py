"""`calibtune run`: data -> train -> eval in one process, then a short results table.

Each stage reads the previous stage's output files (cfg.train.data_dir = cfg.data.output_dir,
cfg.eval.adapter = cfg.train.output_dir), exactly as when the stages are run one by one.
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from calibtune.config import check_config
from calibtune.runtime import is_rank_zero

log = logging.getLogger(__name__)


def results_table(metrics: dict) -> str:
    """Base vs tuned ptrue: ECE, Brier, AUROC with the delta and its 95 % interval (the eval
    report's headline table), accuracy and answer agreement."""
    from calibtune.eval.report import fmt, headline_table, markdown_table

    table = markdown_table(headline_table(metrics, ("ece", "brier", "auroc")))
    return (
        f"{table}\naccuracy {fmt(metrics.get('accuracy'))}   n_test {metrics.get('n_test')}\n"
        f"answer agreement tuned vs base {fmt(metrics.get('answer_agreement'))}"
    )


def run_pipeline(cfg: DictConfig) -> Path:
    """Run the data, train and eval stages in order and print where the report is."""
    check_config(cfg)
    from calibtune.data.stage import run_data_stage
    from calibtune.eval.stage import run_eval_stage
    from calibtune.train.recipe import run_train_stage

    data_dir = run_data_stage(cfg)
    log.info("data stage done: %s", data_dir)
    train_dir = run_train_stage(cfg)
    log.info("train stage done: %s", train_dir)
    eval_dir = Path(run_eval_stage(cfg))
    if is_rank_zero():
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        print("\n" + results_table(metrics))
        print(f"\nreport: {eval_dir / 'report.html'}")
    return eval_dir
