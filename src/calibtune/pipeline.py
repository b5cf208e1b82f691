"""`calibtune run`: data -> train -> eval in one process, then a short results table.

Each stage reads the previous stage's output files (cfg.train.data_dir = cfg.data.output_dir,
cfg.eval.adapter = cfg.train.output_dir), exactly as when the stages are run one by one.

Run again with the same run_dir (after a crash, a preemption or a change of eval settings), the
data and train stages whose outputs are complete and were made with the same settings are
reused; the first stage that has to run again runs every stage after it too. A half-finished
train stage resumes from its last checkpoint (train.resume=auto).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path

from omegaconf import DictConfig

from calibtune.config import check_config, stage_changes
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


def reusable(out_dir: str | Path, cfg: DictConfig, stage: str) -> bool:
    """True when `out_dir` holds a finished stage (its manifest.json) made with the same settings
    (the config.yaml written beside it)."""
    return Path(out_dir, "manifest.json").is_file() and stage_changes(out_dir, cfg, stage) == []


def run_pipeline(cfg: DictConfig) -> Path:
    """Run the data, train and eval stages in order and print where the report is."""
    check_config(cfg)
    from calibtune.data.stage import run_data_stage
    from calibtune.eval.stage import run_eval_stage
    from calibtune.train.checkpoint import find_resume_checkpoint
    from calibtune.train.recipe import run_train_stage

    reuse_data = reusable(cfg.data.output_dir, cfg, "data")
    reuse_train = reuse_data and reusable(cfg.train.output_dir, cfg, "train")
    if not reuse_train:  # refuses stale checkpoints now, not after the data stage
        find_resume_checkpoint(cfg, Path(cfg.train.output_dir))
    if reuse_data:
        log.info("data stage: reusing %s (finished, same settings)", cfg.data.output_dir)
    else:
        log.info("data stage done: %s", run_data_stage(cfg))
    if reuse_train:
        log.info("train stage: reusing %s (finished, same settings)", cfg.train.output_dir)
    else:
        log.info("train stage done: %s", run_train_stage(cfg))
    eval_dir = Path(run_eval_stage(cfg))
    if is_rank_zero():
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        print("\n" + results_table(metrics))
        print(f"\nreport: {eval_dir / 'report.html'}")
    return eval_dir
