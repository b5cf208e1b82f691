"""How many target labels fix the level of a confidence: held-out ECE and Brier after a map fitted
on k labeled target rows, per map family, against no adaptation.

    .venv/bin/python benchmarks/bench_adapt_curve.py <eval dir | rows.jsonl> [...]
        [--field tuned/ptrue] [--ks 25 50 100 200 400] [--families temperature platt isotonic beta]
        [--draws 50] [--domains D ...] [--min-held-out 100] [--with-val] [--seed 0]
        [--adapt-family platt] [--prior-strength 10] [--adapt-write always] [--out curve.json]

Each input is one target: an eval output dir (its predictions.jsonl: docs/evaluation.md; e.g.
each leave-domains-out fold's held-out domains, or a style-shift set; `--with-val` adds the
dir's val_predictions.jsonl, for a target whose val rows fitted nothing) or a JSONL file of rows
with a confidence (`--field`, default tuned/ptrue when the rows have it, else confidence),
`correct` and optionally `group` (the entity; else qid, id, or the row itself) and `domain`
(`--domains` keeps only those). For each k and draw, whole entity groups are drawn at random
until k rows are taken (the last group cut to fit; the rest of it is used nowhere), so no held-out
row shares a group with a fitted one; each family's map (`calibtune.eval.recalibrate`, the maps
`calibtune adapt` fits) is fitted on the k rows and scored on every row of the untouched
groups, beside the confidence as it is (no adaptation). A draw whose k rows hold one outcome
only cannot be fitted (`calibtune adapt` refuses it too): it counts as no adaptation and is
counted in the `one-class` column. Intervals are the 2.5-97.5 % range over draws: where one
user's k labels may land. The `adapt` row is what `calibtune adapt` leaves with
the given settings (its defaults: adapt.family platt, prior_strength 10, write always): the
`--adapt-family` map pulled toward the identity with `--prior-strength`, everywhere
(`--adapt-write always`) or only where its 5-fold cross-fitted Brier on the k rows beats no map
(`better`), else the confidence as it is. The family rows fit without a pull. The `oracle` row
is a Platt map fitted on the held-out rows themselves and scored on them: the best any global
two-parameter map could do there, whatever k. The `floor` row is the ECE a perfectly calibrated confidence would show
on the same held-out rows: the adapted (Platt, else the first family's) confidences scored against
outcomes drawn from them: the part of a figure that is the held-out sample's own noise (a
15-bin ECE of about 100 rows is far from 0 even when nothing is wrong). Beside them, the level
each side knows: |mean confidence - accuracy| of the held-out rows as they are, and |accuracy of
the k rows - accuracy of the held-out rows|, what a map fitted on the k rows learns the level
from. Prints a Markdown table per target (and the mean over targets) with each figure's ratio to
no adaptation.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

KS = (25, 50, 100, 200, 400)
FAMILIES = ("temperature", "platt", "isotonic", "beta")
NONE = "none"
FLOOR = "floor"
ORACLE = "oracle"
GUARDED = "adapt"  # what `calibtune adapt` ships with the --adapt-* settings
LEVEL_GAPS = ("as_is", "k_labels")  # the held-out level error as it is; the k rows' accuracy's


def row_names(families) -> tuple[str, ...]:
    """The table's maps, in order: none, each family, adapt, oracle, floor."""
    return (NONE, *families, GUARDED, ORACLE, FLOOR)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench_adapt_curve.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("inputs", nargs="+", help="eval output dirs or JSONL files of rows")
    parser.add_argument("--field", default=None, help="confidence field (default: auto)")
    parser.add_argument("--ks", type=int, nargs="+", default=list(KS))
    parser.add_argument("--families", nargs="+", default=list(FAMILIES))
    parser.add_argument("--draws", type=int, default=50, help="random draws per k")
    parser.add_argument("--domains", nargs="*", default=None, help="keep only these domains")
    parser.add_argument("--min-held-out", type=int, default=100, help="held-out rows a k needs")
    parser.add_argument(
        "--with-val", action="store_true", help="eval dirs: add val_predictions.jsonl's rows"
    )
    parser.add_argument("--n-bins", type=int, default=15)
    parser.add_argument(
        "--adapt-family", default="platt", help="the `adapt` row's family (adapt.family)"
    )
    parser.add_argument(
        "--prior-strength", type=float, default=10.0, help="the `adapt` row's adapt.prior_strength"
    )
    parser.add_argument(
        "--adapt-write", choices=("always", "better"), default="always", help="adapt.write"
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    return parser.parse_args(argv)


def load_target(
    path: Path, field: str | None, domains: list[str] | None, with_val: bool = False
) -> dict:
    """Confidences, outcomes and entity groups of one target (errors name file, line, field)."""
    from calibtune.errors import InputError
    from calibtune.io import check_probability, read_jsonl_numbered

    files = [path / "predictions.jsonl"] if path.is_dir() else [path]
    if path.is_dir() and with_val:
        files.append(path / "val_predictions.jsonl")
    rows = [(f, line, r) for f in files for line, r in read_jsonl_numbered(f)]
    if domains:
        rows = [(f, line, r) for f, line, r in rows if r.get("domain") in set(domains)]
        if not rows:
            raise InputError(files[0], None, "domain", f"no rows of the domains {domains}")
    field = field or ("tuned/ptrue" if "tuned/ptrue" in rows[0][2] else "confidence")
    c = [check_probability(f, line, field, r.get(field)) for f, line, r in rows]
    y = [check_probability(f, line, "correct", r.get("correct")) for f, line, r in rows]
    groups = [
        str(r.get("group") or r.get("qid") or r.get("id") or f"{f}:{line}") for f, line, r in rows
    ]
    _, inverse = np.unique(groups, return_inverse=True)
    return {
        "path": str(path) + (" (+ val)" if len(files) > 1 else ""),
        "field": field,
        "c": np.asarray(c),
        "y": np.asarray(y),
        "groups": inverse,
        "members": [np.flatnonzero(inverse == g) for g in range(inverse.max() + 1)],
    }


def draw_rows(members: list[np.ndarray], k: int, rng: np.random.Generator):
    """k fit rows taken from whole groups (`members`: each group's rows) in random order, the
    last one cut to fit, and the held-out rows: every row of the groups not touched."""
    members = [members[g] for g in rng.permutation(len(members))]
    sizes = np.cumsum([m.size for m in members])
    touched = int(np.searchsorted(sizes, k)) + 1  # groups needed to reach k rows
    fit = np.concatenate(members[:touched])[:k]
    held = np.concatenate(members[touched:]) if touched < len(members) else np.empty(0, int)
    return fit, held


def one_draw(target: dict, k: int, args: argparse.Namespace, rng) -> dict | None:
    """ECE and Brier on one draw's held-out rows for each family fitted on its k rows, and for
    none; None when the draw leaves fewer than --min-held-out rows out."""
    from calibtune import metrics
    from calibtune.eval.recalibrate import CalibrationUnavailable, apply_calibrator, fit_calibrator

    c, y = target["c"], target["y"]
    fit, held = draw_rows(target["members"], k, rng)
    if held.size < args.min_held_out:
        return None
    scores = {NONE: (c[held], False)}
    for family in args.families:
        try:
            params = fit_calibrator(family, c[fit], y[fit], args.n_bins)
            scores[family] = (np.clip(apply_calibrator(params, c[held]), 0.0, 1.0), False)
        except CalibrationUnavailable:
            scores[family] = (c[held], True)  # one outcome in the k rows: nothing to fit
    scores[GUARDED] = guarded(target, fit, held, args)
    try:  # the held-out rows' own Platt map, scored on them
        oracle = fit_calibrator("platt", c[held], y[held], args.n_bins)
        scores[ORACLE] = (np.clip(apply_calibrator(oracle, c[held]), 0.0, 1.0), False)
    except CalibrationUnavailable:
        scores[ORACLE] = (c[held], True)
    figures = {
        name: {
            "ece": metrics.ece(p, y[held], args.n_bins),
            "brier": metrics.brier(p, y[held]),
            "unfitted": unfitted,
        }
        for name, (p, unfitted) in scores.items()
    }
    adapted = scores.get("platt", scores[args.families[0]] if args.families else scores[NONE])[0]
    drawn = (rng.random(adapted.size) < adapted).astype(float)  # outcomes a calibrated p implies
    figures[FLOOR] = {
        "ece": metrics.ece(adapted, drawn, args.n_bins),
        "brier": metrics.brier(adapted, drawn),
        "unfitted": False,
    }
    figures["level"] = {
        "as_is": abs(float(c[held].mean() - y[held].mean())),
        "k_labels": abs(float(y[fit].mean() - y[held].mean())),
    }
    return figures


def guarded(target: dict, fit: np.ndarray, held: np.ndarray, args) -> tuple[np.ndarray, bool]:
    """The held-out confidences `calibtune adapt` would leave: the family's map fitted on the k
    rows with the prior strength, where `--adapt-write better`'s check (its cross-fitted Brier on
    them beats no map) allows it, else none."""
    from types import SimpleNamespace

    from calibtune import metrics
    from calibtune.errors import InputError
    from calibtune.eval.recalibrate import CalibrationUnavailable, apply_calibrator, fit_calibrator
    from calibtune.serve.adapt import adapted_is_better, cross_fitted

    c, y, groups = target["c"], target["y"], target["groups"]
    settings = SimpleNamespace(
        family=args.adapt_family,
        prior_strength=args.prior_strength,
        per_domain=False,
        min_count=1,
        n_bins=args.n_bins,
        folds=5,
    )
    domains = np.zeros(fit.size, dtype=str)
    try:
        after = cross_fitted(c[fit], y[fit], domains, groups[fit], settings, "sample")
        params = fit_calibrator(args.adapt_family, c[fit], y[fit], args.n_bins, args.prior_strength)
    except (InputError, CalibrationUnavailable):
        return c[held], True  # the command refuses such a sample: nothing written
    briers = {"before": c[fit], "after": after}
    figures = {k: {"brier": {"value": metrics.brier(p, y[fit])}} for k, p in briers.items()}
    if args.adapt_write == "better" and not adapted_is_better(figures):
        return c[held], False  # not better on the sample: today's confidence kept
    return np.clip(apply_calibrator(params, c[held]), 0.0, 1.0), False


def summarise(values: list[float], baseline: list[float]) -> dict:
    """Mean and 2.5-97.5 % range over draws, and the paired difference from no adaptation."""
    values, baseline = np.asarray(values), np.asarray(baseline)
    delta = values - baseline
    return {
        "mean": float(values.mean()),
        "range95": [float(v) for v in np.percentile(values, [2.5, 97.5])],
        "ratio_to_none": float(values.mean() / baseline.mean()) if baseline.mean() > 0 else None,
        "minus_none": {
            "mean": float(delta.mean()),
            "range95": [float(v) for v in np.percentile(delta, [2.5, 97.5])],
        },
    }


def curve(target: dict, args: argparse.Namespace) -> dict:
    """The target's figures for every k that leaves `min_held_out` rows out."""
    out = {}
    for k in args.ks:
        rng = np.random.default_rng([args.seed, k])
        draws = [one_draw(target, k, args, rng) for _ in range(args.draws)]
        draws = [d for d in draws if d is not None]
        if len(draws) < max(2, args.draws // 2):
            out[k] = {"reason": f"{target['y'].size} rows leave fewer than {args.min_held_out} out"}
            continue
        out[k] = {"draws": len(draws)}
        out[k]["level"] = {g: float(np.mean([d["level"][g] for d in draws])) for g in LEVEL_GAPS}
        for name in row_names(args.families):
            out[k][name] = {
                metric: summarise(
                    [d[name][metric] for d in draws], [d[NONE][metric] for d in draws]
                )
                for metric in ("ece", "brier")
            }
            out[k][name]["one_class_draws"] = sum(d[name]["unfitted"] for d in draws)
    return out


def table(figures: dict, families) -> str:
    """A Markdown table: one row per k and map family."""

    def cell(entry: dict) -> str:
        low, high = entry["range95"]
        return f"{entry['mean']:.4f} [{low:.4f}, {high:.4f}]"

    def ratio(entry: dict) -> str:
        return "n/a" if entry["ratio_to_none"] is None else f"{entry['ratio_to_none']:.2f}"

    lines = [
        "| k | map | ECE [2.5 %, 97.5 %] | ECE / none | Brier [2.5 %, 97.5 %] | Brier / none "
        "| ECE - none [2.5 %, 97.5 %] | one-class |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for k, entry in figures.items():
        if "reason" in entry:
            lines.append(f"| {k} | - | n/a: {entry['reason']} | | | | | |")
            continue
        for name in row_names(families):
            e, b = entry[name]["ece"], entry[name]["brier"]
            lines.append(
                f"| {k} | {name} | {cell(e)} | {ratio(e)} | {cell(b)} | {ratio(b)} "
                f"| {cell(e['minus_none'])} | {entry[name]['one_class_draws']}/{entry['draws']} |"
            )
    return "\n".join(lines + ["", level_table({k: [e] for k, e in figures.items()})])


def level_table(measured: dict[int, list[dict]]) -> str:
    """Markdown: per k, the mean over draws (and targets) of the held-out level error as it is
    and of the k rows' accuracy against the held-out rows' (`level` of each k's figures)."""
    lines = [
        "| k | level error as it is | k labels' accuracy - held-out accuracy |",
        "|---|---|---|",
    ]
    for k, entries in measured.items():
        entries = [e for e in entries if "reason" not in e]
        if entries:
            gaps = [np.mean([e["level"][g] for e in entries]) for g in LEVEL_GAPS]
            lines.append(f"| {k} | {gaps[0]:.4f} | {gaps[1]:.4f} |")
    return "\n".join(lines)


def mean_over_targets(results: dict, args: argparse.Namespace) -> str:
    """Markdown: per k and family, the mean over targets of the mean ECE and Brier and their
    ratio to no adaptation (targets where that k could not be measured are left out)."""
    lines = ["| k | map | targets | mean ECE | ECE / none | mean Brier | Brier / none |"]
    lines.append("|---|---|---|---|---|---|---|")
    for k in args.ks:
        measured = [f[k] for f in results.values() if "reason" not in f[k]]
        if not measured:
            continue
        for name in row_names(args.families):
            means = {m: np.mean([f[name][m]["mean"] for f in measured]) for m in ("ece", "brier")}
            none = {m: np.mean([f[NONE][m]["mean"] for f in measured]) for m in ("ece", "brier")}
            lines.append(
                f"| {k} | {name} | {len(measured)} | {means['ece']:.4f} | "
                f"{means['ece'] / none['ece']:.2f} | {means['brier']:.4f} | "
                f"{means['brier'] / none['brier']:.2f} |"
            )
    levels = {k: [f[k] for f in results.values()] for k in args.ks}
    return "\n".join([*lines, "", level_table(levels)])


def main(argv: list[str] | None = None) -> dict:
    """Print the curve of every target (and their mean); write --out when given."""
    args = parse_args(argv)
    results = {}
    for path in args.inputs:
        target = load_target(Path(path), args.field, args.domains, args.with_val)
        figures = curve(target, args)
        results[target["path"]] = figures
        print(
            f"\n## {target['path']} ({target['field']}; {target['y'].size} rows, "
            f"{len(target['members'])} groups, accuracy {target['y'].mean():.3f}; "
            f"{args.draws} draws per k)\n"
        )
        print(table(figures, args.families))
    if len(results) > 1:
        print(f"\n## Mean over {len(results)} targets\n")
        print(mean_over_targets(results, args))
    if args.out:
        from calibtune.io import write_json_atomic

        write_json_atomic(
            args.out, {"args": vars(args) | {"out": str(args.out)}, "results": results}
        )
    return results


if __name__ == "__main__":
    main()
