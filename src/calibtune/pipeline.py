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
import time
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


def timed(times: dict[str, str], name: str, stage, cfg: DictConfig):
    """`stage(cfg)`, its wall time recorded in `times[name]` (as "12.3 s")."""
    started = time.perf_counter()
    result = stage(cfg)
    times[name] = f"{time.perf_counter() - started:.1f} s"
    return result


def run_pipeline(cfg: DictConfig) -> Path:
    """Run the data, train and eval stages in order and print where the report is."""
    check_config(cfg)
    from calibtune.data.stage import run_data_stage
    from calibtune.eval.stage import run_eval_stage
    from calibtune.train.checkpoint import find_resume_checkpoint
    from calibtune.train.recipe import run_train_stage

    times: dict[str, str] = {}
    reuse_data = reusable(cfg.data.output_dir, cfg, "data")
    reuse_train = reuse_data and reusable(cfg.train.output_dir, cfg, "train")
    if not reuse_train:  # refuses stale checkpoints now, not after the data stage
        find_resume_checkpoint(cfg, Path(cfg.train.output_dir))
    if reuse_data:
        log.info("data stage: reusing %s (finished, same settings)", cfg.data.output_dir)
        times["data"] = "reused"
    else:
        log.info("data stage done: %s", timed(times, "data", run_data_stage, cfg))
    if reuse_train:
        log.info("train stage: reusing %s (finished, same settings)", cfg.train.output_dir)
        times["train"] = "reused"
    else:
        log.info("train stage done: %s", timed(times, "train", run_train_stage, cfg))
    eval_dir = Path(timed(times, "eval", run_eval_stage, cfg))
    if is_rank_zero():
        metrics = json.loads((eval_dir / "metrics.json").read_text())
        print("\n" + results_table(metrics))
        print("\nstage times: " + ", ".join(f"{k} {v}" for k, v in times.items()))
        print(f"report: {eval_dir / 'report.html'}")
    return eval_dir
