"""`calibtune adapt`: the level map of a tuned confidence, fitted on labeled rows of your traffic.

    calibtune adapt adapt.input=<sample.jsonl> serve.model_dir=<export dir>
    calibtune adapt adapt.input=<sample.jsonl> run_dir=<pipeline run dir>

A tuned confidence ranks the answers to a new kind of question well but can sit at the wrong
level there (docs/production.md, "The workflow"). This command:

1. reads the sample before any model loads: rows with question / answer / correct (0/1), or QA
   rows with gold `answers`; optional domain, group (the entity: a group's rows share a
   cross-fitting fold) and choices. A bad row fails naming file:line:field; too few labeled
   rows, or too few of one outcome, fail saying how many more are needed. Nothing is written;
2. loads the model as `calibtune score` does (an export, or model + the run's adapter) with the
   calibrator it applies today; QA rows are answered and graded by the data stage's code;
3. scores each answer (`Scorer.raw_confidences`, the confidence `score` serves before its map);
4. measures the level map (`recalibrate.fit_level_map`: adapt.family, global or per domain; a
   Platt map pulled toward the identity with adapt.prior_strength, which fades as labels grow) by
   cross-fitting: each row calibrated by the map fitted on the other folds (entity groups kept
   in one fold), beside today's confidence of the same rows: ECE and Brier of both with 95 %
   intervals (bootstrap over groups) and the paired difference;
5. writes the map fitted on every row (with adapt.write=better only when its cross-fitted Brier
   beats today's calibrator's on the sample; the default, always, relies on the pull): into
   an export as its next calibrator version, made active (`calibtune monitor
   monitor.export=<dir> monitor.rollback=previous` undoes it), or for
   a run dir as `${adapt.output_dir}/calibrators.json` (entry `tuned/ptrue+adapted`, for
   `serve.calibrator=<it> serve.calibrator_name=tuned/ptrue+adapted`); with adapt.json (the
   figures) and sample.jsonl (each row's confidences) in adapt.output_dir.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from calibtune import metrics
from calibtune.config import check_config
from calibtune.errors import InputError
from calibtune.eval.recalibrate import (
    CalibrationUnavailable,
    cross_fitted_domain_confidences,
    fit_level_map,
)
from calibtune.io import read_jsonl_numbered, write_json_atomic, write_jsonl_atomic
from calibtune.runtime import provenance
from calibtune.serve.monitor.versions import promote
from calibtune.serve.score import Scorer, adapter_dir

log = logging.getLogger(__name__)

ADAPTED = "tuned/ptrue+adapted"  # the entry of the calibrators.json written for a run dir
SAMPLE_FIELDS = ("id", "domain", "group", "question", "response", "correct")


# -- the sample


def check_graded_row(path: Path, line: int, row: dict) -> dict:
    """One validated row of question / answer / correct (0/1), with the QA rows' defaults (qid,
    id, group, domain); InputError names the file, line and field."""
    from calibtune.data.sources import validate_qa_row

    answer = row.get("answer")
    if not isinstance(answer, str) or not answer.strip():
        raise InputError(path, line, "answer", "missing or not a non-empty string")
    correct = row.get("correct")
    if correct is None or correct not in (0, 1):
        raise InputError(path, line, "correct", f"must be 0 or 1 (was it right?), got {correct!r}")
    if row.get("domain") is not None and not isinstance(row["domain"], str):
        raise InputError(path, line, "domain", "must be a string (or left out)")
    choices = row.get("choices")
    if choices is not None and (
        not isinstance(choices, list) or not all(isinstance(c, str) for c in choices)
    ):
        raise InputError(path, line, "choices", "must be a list of strings or null")
    checked = validate_qa_row({**row, "answers": [answer], "choices": None}, path, line)
    del checked["answers"]
    return {**checked, "choices": choices, "response": answer, "correct": int(correct)}


def read_sample(path: str | Path) -> tuple[str, list[dict]]:
    """The sample's kind ("graded": rows with `correct`; "qa": QA rows with gold answers, to be
    answered and graded) and its validated rows; the first bad row fails with file:line:field."""
    from calibtune.data.sources import read_qa_jsonl

    path = Path(path)
    numbered = read_jsonl_numbered(path)
    if any("correct" in row for _, row in numbered):
        return "graded", [check_graded_row(path, line, row) for line, row in numbered]
    return "qa", read_qa_jsonl(path)


def labels_needed(n: int, n_right: int | None, settings) -> str | None:
    """What the sample lacks, saying how many more labels it needs; None when it is enough
    (`n_right` None: the outcomes are not known yet)."""
    if n < settings.min_labels:
        return (
            f"{n} labeled rows, fewer than adapt.min_labels={settings.min_labels}: "
            f"label {settings.min_labels - n} more rows of this traffic"
        )
    if n_right is None:
        return None
    for count, outcome in ((n_right, "right (correct=1)"), (n - n_right, "wrong (correct=0)")):
        if count < settings.min_per_class:
            return (
                f"{count} of the {n} rows have an answer the model got {outcome}, fewer than "
                f"adapt.min_per_class={settings.min_per_class}: the level is set by both "
                f"outcomes; label at least {settings.min_per_class - count} more rows whose "
                f"answer is {outcome.split()[0]}"
            )
    return None


def check_enough(path: object, n: int, n_right: int | None, settings) -> None:
    """Fail (nothing written) when `labels_needed` finds the sample too small."""
    lacking = labels_needed(n, n_right, settings)
    if lacking:
        raise InputError(path, None, "correct", f"{lacking}; nothing was written")


# -- confidences


def grade_sample(scorer: Scorer, rows: list[dict], cfg: DictConfig) -> list[dict]:
    """QA rows answered by the scorer's model (greedy) and graded by the data stage's code, with
    the scorer's prompt (an export's own)."""
    from calibtune.data.stage import label_qa_rows

    view = OmegaConf.merge(cfg, {"prompt": scorer.prompt_cfg, "data": {"temperature": 0.0}})
    return label_qa_rows(scorer.model, scorer.tokenizer, rows, view)


def sample_arrays(rows: list[dict]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Outcomes, domains and entity groups of the labeled rows (rows sharing a group, a qid or a
    question text form one group, as the data stage splits them)."""
    from calibtune.data.stage import entity_groups

    entity_groups(rows)
    y = np.array([float(r["correct"]) for r in rows])
    return y, np.array([str(r["domain"]) for r in rows]), np.array([str(r["group"]) for r in rows])


def cross_fitted(raw, y, domains, groups, settings, path) -> np.ndarray:
    """Each row's confidence under the level map fitted on the other folds (`fit_level_map`'s
    maps: globally, a per-domain fit where every domain falls back to the global map)."""
    maps = {
        "kind": settings.family,
        "min_count": settings.min_count if settings.per_domain else y.size + 1,
        "n_bins": settings.n_bins,
        "shrinkage": None,
        "prior_strength": settings.prior_strength,
    }
    try:
        return cross_fitted_domain_confidences(raw, y, domains, groups, maps, settings.folds)
    except CalibrationUnavailable as err:
        raise InputError(
            path,
            None,
            None,
            f"cannot cross-fit adapt.family={settings.family}: {err}; label "
            "more rows (more entity groups, both outcomes in every fold); nothing was written",
        ) from None


# -- figures


def basic_interval(value: float, draws: list[float]) -> list[float] | None:
    """95 % basic bootstrap interval of a non-negative figure (clipped at 0): binned ECE is
    biased upward on resamples (duplicated rows), so plain percentiles can miss the estimate."""
    if not draws:
        return None
    low, high = np.percentile(draws, [2.5, 97.5])
    return [max(float(2 * value - high), 0.0), float(2 * value - low)]


def figures(confidences: dict[str, np.ndarray], y, groups, n_boot: int, seed: int, n_bins: int):
    """ECE and Brier of each confidence on the sample with 95 % intervals (bootstrap over entity
    groups), and the paired after-minus-before difference (`metrics.paired_bootstrap`)."""
    scorers: dict[str, Callable] = {
        "ece": lambda c, t: metrics.ece(c, t, n_bins),
        "brier": metrics.brier,
    }
    draw = metrics.resample_indices(np.random.default_rng(seed), y.size, groups)
    draws = {(name, m): [] for name in confidences for m in scorers}
    for _ in range(n_boot):
        index = draw()
        for (name, m), values in draws.items():
            values.append(scorers[m](confidences[name][index], y[index]))
    out: dict = {}
    for name, c in confidences.items():
        out[name] = {}
        for m, score in scorers.items():
            value = score(c, y)
            out[name][m] = {"value": value, "ci95": basic_interval(value, draws[name, m])}
    out["after_minus_before"] = {
        m: metrics.paired_bootstrap(
            score, confidences["before"], confidences["after"], y, n_boot, seed, groups
        )
        for m, score in scorers.items()
    }
    return out


def summary_lines(report: dict) -> list[str]:
    """The figures as a few printed lines."""

    def cell(entry: dict) -> str:
        ci = entry.get("ci95")
        return f"{entry['value']:.4f}" + (f" [{ci[0]:.4f}, {ci[1]:.4f}]" if ci else "")

    f = report["figures"]
    lines = [
        f"adapt: {report['n']} labeled rows ({report['n_groups']} entity groups, accuracy "
        f"{report['accuracy']:.3f}); {report['family']} map"
        f"{' per domain' if report['per_domain'] else ''}, cross-fitted over "
        f"{report['folds']} folds; 95 % intervals over groups",
        f"{'':<28}{'ECE':<30}Brier",
    ]
    for name, label in (
        ("raw", "uncalibrated"),
        ("before", "today's calibrator"),
        ("after", "adapted (cross-fitted)"),
    ):
        lines.append(f"  {label:<26}{cell(f[name]['ece']):<30}{cell(f[name]['brier'])}")
    delta = f["after_minus_before"]
    lines.append(f"  {'after - before':<26}{cell(delta['ece']):<30}{cell(delta['brier'])}")
    if not adapted_is_better(f):
        lines.append("  warning: the adapted map is not better than today's on this sample (Brier)")
    return lines


# -- the command


def adapted_is_better(figures: dict) -> bool:
    """Whether the cross-fitted map beats today's calibrator on the sample (Brier, the proper
    score: ECE alone can drop while the confidences get worse). `figures`: `figures()`'s, or
    any {"before"|"after": {"brier": {"value": ...}}}."""
    return figures["after"]["brier"]["value"] < figures["before"]["brier"]["value"]


def write_calibrator(cfg: DictConfig, params: dict, record: dict) -> str:
    """The fitted map where `export` / `score` / `Scorer` / `monitor` read it; returns where."""
    if cfg.serve.model_dir:
        export_dir = Path(cfg.serve.model_dir)
        version = promote(export_dir, {**record, "params": params}, source="adapt")
        return f"{export_dir} calibrator version {version}"
    path = Path(cfg.adapt.output_dir) / "calibrators.json"
    write_json_atomic(path, {"calibrators": {ADAPTED: params}, **provenance()})
    return str(path)


def sample_confidences(cfg: DictConfig, kind: str, rows: list[dict], path: Path):
    """The labeled rows (QA rows answered and graded first) and each answer's raw confidence and
    today's calibrated one, from the model `calibtune score` would serve."""
    if not cfg.serve.model_dir and cfg.serve.adapter:
        adapter_dir(cfg.serve.adapter)  # a missing adapter fails before the model loads
    scorer = Scorer.from_config(cfg)
    if kind == "qa":
        rows = grade_sample(scorer, rows, cfg)
        check_enough(path, len(rows), sum(int(r["correct"]) for r in rows), cfg.adapt)
    raw = scorer.raw_confidences(
        [r["question"] for r in rows], [r["response"] for r in rows], [r["choices"] for r in rows]
    )
    return rows, raw, scorer.calibrate(raw, [str(r["domain"]) for r in rows])


def write_report(out_dir: Path, report: dict, params: dict, rows: list[dict], confidences) -> None:
    """adapt.json (the figures and the map) and sample.jsonl (each row's confidences)."""
    write_json_atomic(out_dir / "adapt.json", {**report, "params": params, **provenance()})
    write_jsonl_atomic(
        out_dir / "sample.jsonl",
        (
            {
                **{k: r.get(k) for k in SAMPLE_FIELDS},
                **{f"{n}_confidence": float(c[i]) for n, c in confidences.items()},
            }
            for i, r in enumerate(rows)
        ),
    )


def run_adapt(cfg: DictConfig) -> Path:
    """`calibtune adapt`: fit the level map on a labeled sample of the target, report before and
    after, and write the calibrator (nothing is written when the sample is bad or too small)."""
    check_config(cfg)
    settings, path = cfg.adapt, Path(cfg.adapt.input)
    kind, rows = read_sample(path)  # every row checked before the model loads
    n_right = sum(r["correct"] for r in rows) if kind == "graded" else None
    check_enough(path, len(rows), n_right, settings)
    rows, raw, before = sample_confidences(cfg, kind, rows, path)
    y, domains, groups = sample_arrays(rows)
    confidences = {
        "raw": raw,
        "before": before,
        "after": cross_fitted(raw, y, domains, groups, settings, path),
    }
    per_domain = domains if settings.per_domain else None
    params = fit_level_map(
        settings.family,
        raw,
        y,
        per_domain,
        settings.min_count,
        settings.n_bins,
        settings.prior_strength,
    )
    report = {
        "input": str(path),
        "input_kind": kind,
        "model": str(cfg.serve.model_dir or cfg.serve.adapter),
        "n": int(y.size),
        "n_groups": int(np.unique(groups).size),
        "accuracy": float(y.mean()),
        "family": settings.family,
        "prior_strength": float(settings.prior_strength),
        "per_domain": bool(settings.per_domain),
        "folds": int(settings.folds),
        "figures": figures(confidences, y, groups, settings.n_boot, int(cfg.seed), settings.n_bins),
    }
    kept = not adapted_is_better(report["figures"]) and settings.write == "better"
    report["written"] = None if kept else write_calibrator(cfg, params, report)
    out_dir = Path(settings.output_dir)
    write_report(out_dir, report, params, rows, confidences)
    print("\n".join(summary_lines(report)))
    if kept:
        print(
            "today's calibrator kept: the adapted map is not better on this sample "
            "(adapt.write=always writes it anyway)"
        )
    print(f"calibrator -> {report['written']}; report -> {out_dir / 'adapt.json'}")
    return out_dir
