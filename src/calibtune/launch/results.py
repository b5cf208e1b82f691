"""`calibtune results <run or eval dir> [<dir> ...]`: the results tables as Markdown.

    calibtune results outputs/default                  base vs tuned vs baselines on test, with deltas
    calibtune results outputs/s0 outputs/s1 outputs/s2  mean ± sd over the runs (e.g. seeds)
    calibtune results outputs/lodo                     fold mean ± sd of a `calibtune lodo` run
    calibtune results outputs/default --per-domain     one row per test domain
    calibtune results outputs/default --split val      the same methods scored on val

Every eval metrics.json below the given dirs is one run (a run dir, its eval dir, a lodo dir's
folds or a multirun's trials). Figures come from metrics.json (docs/evaluation.md); `--split val`
and `--within-min-per-class` re-score the eval's saved predictions with the eval's own scoring
functions (no model is loaded).
"""

from __future__ import annotations

import argparse
import json
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from calibtune.errors import CalibtuneError
from calibtune.io import read_jsonl
from calibtune.launch.aggregate import aggregate, find_eval_metrics, headline_numbers

METHODS = ("base/ptrue", "base/pmin", "baseline/logreg", "baseline/probe", "tuned/ptrue")
SERVED = "tuned/ptrue+per_domain"  # what the default export serves (docs/production.md §1)
SERVED_NOTE = (
    f"{SERVED}: what `calibtune score` serves with this run's export (its default "
    "calibrator): tuned/ptrue through each domain's map fitted on the eval's val rows (and the "
    "probe's out-of-fold train rows when they help); a domain val never saw keeps tuned/ptrue."
)
DOMAIN_METHODS = ("base/ptrue", "tuned/ptrue")
ROWS = {"ece": "ECE", "auroc": "AUROC", "auroc_within": "AUROC within domains", "brier": "Brier"}
DEFAULT_MIN_PER_CLASS = 10  # eval.within_min_per_class's default


def load_runs(dirs: Sequence[Path]) -> list[tuple[str, Path, dict]]:
    """(name, eval dir, metrics) of every eval metrics.json below `dirs`, in the order given."""
    runs = []
    for root in dirs:
        if not root.is_dir():
            raise CalibtuneError(f"{root}: no such directory")
        paths = find_eval_metrics(root)
        if not paths:
            raise CalibtuneError(f"{root}: no eval metrics.json below it (run `calibtune eval`?)")
        for path in paths:
            run = path.parent.parent if path.parent.name == "eval" else path.parent
            name = str(run) if run.is_relative_to(root) else str(root)
            runs.append((name, path.parent, json.loads(path.read_text(encoding="utf-8"))))
    return runs


def min_per_class_of(eval_dir: Path) -> int:
    """The eval's `eval.within_min_per_class` (its config.yaml), else the default."""
    path = eval_dir / "config.yaml"
    value = (
        OmegaConf.load(path).get("eval", {}).get("within_min_per_class") if path.is_file() else None
    )
    return int(value) if value is not None else DEFAULT_MIN_PER_CLASS


def rescored(path: Path, methods: Sequence[str], n_bins: int, min_per_class: int) -> dict:
    """metrics.json's n, accuracy and `methods` block recomputed from a predictions file."""
    from calibtune.eval import scoring

    rows = read_jsonl(path)
    if not rows:
        raise CalibtuneError(f"{path}: no rows")
    y = np.array([float(r["correct"]) for r in rows])
    present = [m for m in methods if any(r.get(m) is not None for r in rows)]
    confidences = {
        m: np.array([np.nan if r.get(m) is None else r[m] for r in rows], dtype=float)
        for m in present
    }
    scores = {m: scoring.score_method(c, y, n_bins) for m, c in confidences.items()}
    domains = [str(r.get("domain")) for r in rows]
    within = scoring.within_domain(domains, y, confidences, n_bins, min_per_class)
    scoring.add_within(scores, within)
    return {
        "n_test": len(rows),
        "accuracy": float(y.mean()),
        "methods": scores,
        "within_domain": within,
        "per_domain": scoring.per_domain(domains, y, {}, n_bins),
    }


def split_metrics(
    eval_dir: Path, metrics: dict, args: argparse.Namespace, methods: list[str]
) -> dict:
    """The run's metrics on `args.split`: metrics.json for test (its within-domain figures
    re-scored when --within-min-per-class is given), the val predictions re-scored for val."""
    if args.split == "test" and args.within_min_per_class is None:
        return metrics
    min_per_class = args.within_min_per_class or min_per_class_of(eval_dir)
    name = "predictions.jsonl" if args.split == "test" else "val_predictions.jsonl"
    fresh = rescored(eval_dir / name, methods, metrics.get("n_bins", 15), min_per_class)
    if args.split == "val":  # no intervals on val: it is where the best baseline was chosen
        return {**fresh, "deltas": {}, "deltas_vs_best_baseline": {}}
    merged = {m: dict(s) for m, s in metrics["methods"].items()}
    for method, scores in fresh["methods"].items():
        merged.setdefault(method, {}).update({k: v for k, v in scores.items() if "within" in k})
    return {**metrics, "methods": merged}


def methods_shown(runs: list[dict], chosen: Sequence[str] | None, split: str) -> list[str]:
    """The chosen methods, else the default ones any run has figures for plus each run's best
    baseline on val, the tuned model, and on test what the default export serves (SERVED; on
    val its maps were fitted on the rows scored)."""
    if chosen:
        return list(chosen)
    best = [(m.get("deltas_vs_best_baseline") or {}).get("baseline") for m in runs]
    names = [m for m in METHODS if m != "tuned/ptrue"] + [b for b in best if b] + ["tuned/ptrue"]
    names += [SERVED] if split == "test" else []
    names = list(dict.fromkeys(names))
    return [
        n for n in names if any(headline_numbers(m, [n]).get(f"{n}/ece") is not None for m in runs)
    ]


def fmt(value: float | None, sign: bool = False) -> str:
    """Three decimals (signed for a delta); n/a for a missing number."""
    if value is None or not np.isfinite(value):
        return "n/a"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    """Markdown table lines."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def delta_cell(delta: dict | None) -> str:
    """`+0.388 [+0.327, +0.447]`, or n/a."""
    if not delta or delta.get("value") is None:
        return "n/a"
    ci = delta.get("ci95")
    bounds = f" [{fmt(ci[0], True)}, {fmt(ci[1], True)}]" if ci else ""
    return fmt(delta["value"], True) + bounds


def delta_rows(name: str, metrics: dict, rows: Sequence[str]) -> list[list[str]]:
    """Tuned minus base ptrue and minus the best baseline on val, one row each."""
    versus = metrics.get("deltas_vs_best_baseline") or {}
    out = []
    for label, deltas in (
        ("base/ptrue", metrics.get("deltas") or {}),
        (f"{versus.get('baseline')} (best baseline on val)", versus.get("deltas") or {}),
    ):
        if any((deltas.get(r) or {}).get("value") is not None for r in rows):
            out.append([f"{name}{label}", *(delta_cell(deltas.get(r)) for r in rows)])
    return out


def headline_line(metrics: dict, split: str) -> str:
    """`test, n = 1,000 (240 entity groups), accuracy 0.191`."""
    groups = ((metrics.get("deltas") or {}).get("auroc") or {}).get("n_groups")
    groups_text = f" ({groups:,} entity groups)" if groups else ""
    return f"{split}, n = {metrics['n_test']:,}{groups_text}, accuracy {fmt(metrics['accuracy'])}"


def one_run(name: str, metrics: dict, methods: list[str], split: str) -> str:
    """Methods side by side on one run, then tuned minus base and minus the best baseline."""
    numbers = headline_numbers(metrics, methods)
    rows = [r for r in ROWS if any(numbers.get(f"{m}/{r}") is not None for m in methods)]
    lines = [f"{name}: {headline_line(metrics, split)}", ""]
    lines += table(
        [split, *methods],
        [[ROWS[r], *(fmt(numbers.get(f"{m}/{r}")) for m in methods)] for r in rows],
    )
    deltas = delta_rows("", metrics, rows)
    if deltas:
        lines += ["", "95 % cluster-bootstrap intervals over entity groups:", ""]
        lines += table(["tuned/ptrue minus", *(ROWS[r] for r in rows)], deltas)
    return "\n".join(lines)


def is_fold(name: str) -> bool:
    """Whether a run is a `calibtune lodo` fold (<run_dir>/fold<i>)."""
    return re.fullmatch(r"fold\d+", Path(name).name) is not None


def several_runs(runs: list[tuple[str, dict]], methods: list[str], split: str) -> str:
    """Mean ± sd over the runs per method, then each run's deltas."""
    flat = [headline_numbers(m, methods) for _, m in runs]
    stats = aggregate(flat)
    rows = [r for r in ROWS if any(f"{m}/{r}" in stats for m in methods)]
    over = "folds" if all(is_fold(n) for n, _ in runs) else "runs"
    lines = [f"{len(runs)} {over}: {', '.join(n for n, _ in runs)}", ""]

    def cell(key: str) -> str:
        entry = stats.get(key)
        if entry is None:
            return "n/a"
        sd = f" ± {fmt(entry['sd'])}" if entry["sd"] is not None else ""
        partial = f" ({entry['n']} of {len(runs)})" if entry["n"] < len(runs) else ""
        return fmt(entry["mean"]) + sd + partial

    header = [f"{split}, mean ± sd over {len(runs)} {over}", *methods]
    body = [[ROWS[r], *(cell(f"{m}/{r}") for m in methods)] for r in rows]
    lines += table(header, [*body, ["accuracy", cell("accuracy"), *[""] * (len(methods) - 1)]])
    deltas = [row for name, m in runs for row in delta_rows(f"{name}: ", m, rows)]
    if deltas:
        lines += ["", "Per run, 95 % cluster-bootstrap intervals over entity groups:", ""]
        lines += table(["tuned/ptrue minus", *(ROWS[r] for r in rows)], deltas)
    return "\n".join(lines)


def domain_figures(metrics: dict, method: str) -> dict[str, dict]:
    """{domain: {ece, auroc, n}} of one method (within_domain lists every method's)."""
    within = (metrics.get("within_domain") or {}).get(method) or {}
    if within.get("per_domain"):
        return within["per_domain"]
    per_domain = metrics.get("per_domain") or {}
    return {d: e["methods"][method] for d, e in per_domain.items() if method in e["methods"]}


def per_domain_table(runs: list[tuple[str, dict]], methods: list[str]) -> str:
    """One row per test domain: n, accuracy, ECE and AUROC per method (means over the runs that
    hold the domain)."""
    values: dict[str, dict[str, list[float]]] = {}
    for _, metrics in runs:
        for domain, entry in (metrics.get("per_domain") or {}).items():
            cells = values.setdefault(domain, {})
            cells.setdefault("n", []).append(entry["n"])
            cells.setdefault("accuracy", []).append(entry["accuracy"])
        for method in methods:
            for domain, scores in domain_figures(metrics, method).items():
                for metric in ("ece", "auroc"):
                    if scores.get(metric) is not None:
                        values.setdefault(domain, {}).setdefault(f"{metric} {method}", []).append(
                            scores[metric]
                        )
    if not values:
        raise CalibtuneError("no per-domain figures in these metrics.json files")
    columns = [f"{metric} {m}" for metric in ("ece", "auroc") for m in methods]
    several = len(runs) > 1
    header = [
        "domain",
        "n",
        "accuracy",
        *(c.replace("ece", "ECE").replace("auroc", "AUROC") for c in columns),
    ]
    rows = []
    for domain, cells in sorted(values.items()):
        mean = {k: float(np.mean(v)) for k, v in cells.items()}
        n = str(int(sum(cells.get("n", [0]))))
        row = [domain, n, fmt(mean.get("accuracy")), *(fmt(mean.get(c)) for c in columns)]
        rows.append(row + ([str(len(cells.get("n", [])))] if several else []))
    note = ["(n summed, figures averaged over the runs holding the domain)", ""] if several else []
    return "\n".join(note + table(header + (["runs"] if several else []), rows))


def render(args: argparse.Namespace) -> str:
    """The Markdown for the dirs and options of `args`."""
    loaded = load_runs(args.dirs)
    methods = methods_shown([m for _, _, m in loaded], args.methods, args.split)
    if args.per_domain:
        methods = list(args.methods or DOMAIN_METHODS)
    runs = [(name, split_metrics(d, m, args, methods)) for name, d, m in loaded]
    if args.per_domain:
        return per_domain_table(runs, methods)
    if len(runs) == 1:
        text = one_run(*runs[0], methods, args.split)
    else:
        text = several_runs(runs, methods, args.split)
    return text + (f"\n\n{SERVED_NOTE}" if SERVED in methods else "")


def main(argv: Sequence[str] | None = None) -> None:
    """Print the results tables of the given run, eval or lodo dirs."""
    parser = argparse.ArgumentParser(prog="calibtune results", description=__doc__.split("\n")[0])
    parser.add_argument("dirs", type=Path, nargs="+", help="run, eval, lodo or multirun dirs")
    parser.add_argument("--per-domain", action="store_true", help="one row per test domain")
    parser.add_argument("--methods", nargs="+", help=f"columns (default: {' '.join(METHODS)})")
    parser.add_argument("--split", choices=("test", "val"), default="test")
    parser.add_argument(
        "--within-min-per-class",
        type=int,
        help="re-score the within-domain figures from the predictions over the domains with at "
        "least N right and N wrong answers (default: metrics.json's, the eval's setting)",
    )
    print(render(parser.parse_args(argv)))
