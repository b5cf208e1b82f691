"""What one sweep trial scored, read from its output files, and the objective Optuna optimises.

A trial is one `calibtune train` (or `calibtune run`) in its own run dir. Its numbers come from
the train stage's outputs (manifest.json: the kept adapter's val metrics; metrics.jsonl: the
step-0 validation of the untouched base model) and, when the trial also ran the eval stage, from
eval/metrics.json (test metrics and what tuning cost in answer accuracy).

    calibtune train +sweep=optuna [overrides]     # objective: sweep.metric, see conf/sweep/
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path

from omegaconf import DictConfig

from calibtune.errors import InputError

log = logging.getLogger(__name__)

TRAIN_MANIFEST = "manifest.json"
TRAIN_METRICS = "metrics.jsonl"
EVAL_METRICS = "metrics.json"
# Returned for a trial that breaks the accuracy-drop limit: worse than any real metric value.
PENALTY = 1e6


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as err:
        raise InputError(path, None, None, f"cannot read ({err})") from None


def _finite(value: object) -> float | None:
    """A float, or None for missing / non-numeric / NaN values."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if math.isfinite(value) else None


def base_val_metrics(metrics_path: Path) -> dict[str, float]:
    """Validation of the untouched model (the step-0 `val/...` record), if it was run."""
    if not metrics_path.is_file():
        return {}
    with metrics_path.open(encoding="utf-8") as handle:
        for line in handle:
            record = json.loads(line) if line.strip() else {}
            if record.get("step") == 0 and any(k.startswith("val/") for k in record):
                return {k[len("val/") :]: v for k, v in record.items() if k.startswith("val/")}
    return {}


def trial_metrics(train_dir: str | Path, eval_dir: str | Path | None = None) -> dict:
    """Flat numbers of one trial: `val/<m>` (kept adapter), `base_val/<m>` (step 0), and from
    eval, `test/<m>`, `base_test/<m>`, `accuracy/base`, `accuracy/tuned`, `accuracy_drop`."""
    train_dir = Path(train_dir)
    manifest = _read_json(train_dir / TRAIN_MANIFEST)
    best = manifest.get("best") or {}
    record: dict = {"step": best.get("step"), "steps": manifest.get("steps")}
    for name, value in (best.get("val_metrics") or {}).items():
        record[f"val/{name}"] = _finite(value)
    for name, value in base_val_metrics(train_dir / TRAIN_METRICS).items():
        record[f"base_val/{name}"] = _finite(value)
    eval_file = Path(eval_dir) / EVAL_METRICS if eval_dir else None
    if eval_file is not None and eval_file.is_file():
        record |= eval_numbers(_read_json(eval_file))
    return record


def eval_numbers(metrics: dict) -> dict:
    """The eval stage's test numbers in the trial's flat naming."""
    methods = metrics.get("methods") or {}
    record = {}
    for prefix, method in (("test", "tuned/ptrue"), ("base_test", "base/ptrue")):
        for name in ("ece", "brier", "auroc"):
            record[f"{prefix}/{name}"] = _finite((methods.get(method) or {}).get(name))
    cost = metrics.get("tuning_cost") or {}
    base, tuned = _finite(cost.get("base_accuracy")), _finite(cost.get("tuned_accuracy"))
    record["accuracy/base"], record["accuracy/tuned"] = base, tuned
    record["accuracy_drop"] = base - tuned if base is not None and tuned is not None else None
    record["answer_agreement"] = _finite(metrics.get("answer_agreement"))
    return record


def objective_value(
    record: dict, metric: str, direction: str, max_accuracy_drop: float | None
) -> float:
    """`record[metric]`, or the penalty when the trial lost more accuracy than allowed."""
    value = record.get(metric)
    if value is None:
        known = sorted(k for k, v in record.items() if isinstance(v, float))
        raise InputError(
            "sweep.metric", None, metric, f"the trial has no such number; known: {known}"
        )
    drop = record.get("accuracy_drop")
    if max_accuracy_drop is not None and drop is not None and drop > max_accuracy_drop:
        log.warning("accuracy dropped by %.3f > %.3f: trial penalised", drop, max_accuracy_drop)
        return PENALTY if direction == "minimize" else -PENALTY
    return float(value)


def objective(cfg: DictConfig) -> float:
    """The number a sweep trial returns to the sweeper (after its stage function has run)."""
    eval_dir = cfg.eval.output_dir if cfg.stage == "run" else None
    record = trial_metrics(cfg.train.output_dir, eval_dir)
    if record.get("accuracy_drop") is None:
        log.info("no eval answer accuracy for this trial: the accuracy-drop limit is not checked")
    value = objective_value(
        record, cfg.sweep.metric, cfg.sweep.direction, cfg.sweep.get("max_accuracy_drop")
    )
    log.info("sweep objective %s = %s", cfg.sweep.metric, value)
    return value
