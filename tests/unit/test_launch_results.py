"""`calibtune results` on eval outputs written with the eval stage's own scoring functions."""

from __future__ import annotations

import statistics
from pathlib import Path

import numpy as np
import pytest

from calibtune import cli, metrics
from calibtune.errors import CalibtuneError
from calibtune.eval import scoring
from calibtune.eval.report import prediction_rows
from calibtune.io import write_json_atomic, write_jsonl_atomic
from calibtune.launch import results

DOMAINS = ("arithmetic", "capitals", "currencies")
N_BINS = 15
PROBE_REASON = "the tuned model is this probe (method=probe, probe.fit=logistic: the same fit)"


def split_rows(rng: np.random.Generator, n_per_domain: int, split: str) -> tuple[list, dict]:
    """Rows (id, domain, group, correct) and every method's confidence on one split."""
    rows, accuracy = [], {"arithmetic": 0.2, "capitals": 0.5, "currencies": 0.35}
    for domain in DOMAINS:
        for i in range(n_per_domain):
            right = float(rng.random() < accuracy[domain])
            group = f"{domain}-{i // 3}"
            rows.append(
                {"id": f"{split}-{domain}-{i}", "domain": domain, "group": group, "correct": right}
            )
    y = np.array([r["correct"] for r in rows])
    noise = rng.normal(0.0, 1.0, y.size)
    confidences = {
        "base/ptrue": np.clip(0.3 + 0.05 * noise, 0.01, 0.99),
        "base/pmin": 1 / (1 + np.exp(-(y - 0.8 + 1.2 * noise))),
        "baseline/logreg": 1 / (1 + np.exp(-(1.5 * y - 1.3 + 0.9 * noise))),
        "tuned/ptrue": 1 / (1 + np.exp(-(2.5 * y - 1.8 + 0.8 * noise))),
    }
    return rows, confidences


def write_eval(eval_dir: Path, seed: int, min_per_class: int = 10) -> dict:
    """An eval output dir as the eval stage writes it (metrics.json assembled from
    calibtune.eval.scoring as run_eval_stage does, predictions files by the report writer)."""
    rng = np.random.default_rng(seed)
    val_rows, val = split_rows(rng, 40, "val")
    test_rows, test = split_rows(rng, 60, "test")
    y_val = np.array([r["correct"] for r in val_rows])
    y = np.array([r["correct"] for r in test_rows])
    domains = [r["domain"] for r in test_rows]
    methods = {name: scoring.score_method(c, y, N_BINS) for name, c in test.items()}
    methods["baseline/probe"] = {"n": 0, "n/a": {"all": PROBE_REASON}}
    within = scoring.within_domain(domains, y, test, N_BINS, min_per_class)
    scoring.add_within(methods, within)
    settings = {
        "n_bins": N_BINS,
        "n_boot": 40,
        "seed": seed,
        "groups": [r["group"] for r in test_rows],
        "domains": domains,
        "min_per_class": min_per_class,
    }
    record = {
        "schema_version": 1,
        "n_test": len(test_rows),
        "n_val": len(val_rows),
        "accuracy": float(y.mean()),
        "seed": seed,
        "n_bins": N_BINS,
        "methods": methods,
        "deltas": scoring.paired_deltas(test["base/ptrue"], test["tuned/ptrue"], y, **settings),
        "deltas_vs_best_baseline": scoring.deltas_vs_best_baseline(val, y_val, test, y, settings),
        "per_domain": scoring.per_domain(
            domains, y, {m: test[m] for m in ("base/ptrue", "tuned/ptrue")}, N_BINS
        ),
        "within_domain": within,
    }
    write_json_atomic(eval_dir / "metrics.json", record)
    write_jsonl_atomic(eval_dir / "predictions.jsonl", prediction_rows(test_rows, test))
    write_jsonl_atomic(eval_dir / "val_predictions.jsonl", prediction_rows(val_rows, val))
    (eval_dir / "config.yaml").write_text(f"eval:\n  within_min_per_class: {min_per_class}\n")
    return {"metrics": record, "val": (val_rows, val), "test": (test_rows, test)}


def run(capsys, *argv: str) -> str:
    """What `calibtune results <argv>` prints."""
    cli.main(["results", *argv])
    return capsys.readouterr().out


def row(out: str, label: str) -> list[str]:
    """The cells of the table row starting with `label`."""
    for line in out.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if cells[0] == label:
            return cells[1:]
    raise AssertionError(f"no row {label!r} in\n{out}")


def test_one_run_prints_methods_side_by_side_with_deltas(tmp_path, capsys):
    written = write_eval(tmp_path / "default" / "eval", seed=0)
    m = written["metrics"]
    out = run(capsys, str(tmp_path / "default"))
    best = m["deltas_vs_best_baseline"]["baseline"]
    assert best in ("base/pmin", "baseline/logreg")  # chosen on val by the eval's own rule
    header = row(out, "test")
    assert header == ["base/ptrue", "base/pmin", "baseline/logreg", "tuned/ptrue"]  # probe: n/a
    tuned = m["methods"]["tuned/ptrue"]
    assert row(out, "AUROC")[3] == f"{tuned['auroc']:.3f}"
    assert row(out, "ECE")[0] == f"{m['methods']['base/ptrue']['ece']:.3f}"
    assert row(out, "Brier")[2] == f"{m['methods']['baseline/logreg']['brier']:.3f}"
    assert row(out, "AUROC within domains")[3] == f"{tuned['auroc_within']:.3f}"
    auroc = m["deltas"]["auroc"]
    lo, hi = auroc["ci95"]
    assert row(out, "base/ptrue")[1] == f"{auroc['value']:+.3f} [{lo:+.3f}, {hi:+.3f}]"
    assert auroc["value"] > 0.3  # the tuned confidence ranks; the base one does not
    versus = m["deltas_vs_best_baseline"]["deltas"]["ece"]
    assert row(out, f"{best} (best baseline on val)")[0].startswith(f"{versus['value']:+.3f} [")
    groups = auroc["n_groups"]
    assert f"test, n = 180 ({groups} entity groups), accuracy {m['accuracy']:.3f}" in out


def test_what_the_export_serves_is_shown_on_test_when_the_eval_scored_it(tmp_path, capsys):
    written = write_eval(tmp_path / "run" / "eval", seed=4)
    m = written["metrics"]
    rows, test = written["test"]
    y = np.array([r["correct"] for r in rows])
    served = np.clip(test["tuned/ptrue"] * 0.9 + 0.02, 0, 1)  # any other confidence
    m["methods"][results.SERVED] = scoring.score_method(served, y, N_BINS)
    write_json_atomic(tmp_path / "run" / "eval" / "metrics.json", m)
    out = run(capsys, str(tmp_path / "run"))
    assert row(out, "test")[-2:] == ["tuned/ptrue", results.SERVED]
    assert row(out, "ECE")[-1] == f"{metrics.ece(served, y, n_bins=N_BINS):.3f}"
    assert results.SERVED_NOTE in out
    assert results.SERVED not in run(capsys, str(tmp_path / "run"), "--split", "val")


def test_seeds_give_mean_and_sd_per_method(tmp_path, capsys):
    seeds = [write_eval(tmp_path / f"s{k}" / "eval", seed=k)["metrics"] for k in range(3)]
    out = run(capsys, *(str(tmp_path / f"s{k}") for k in range(3)))
    assert "mean ± sd over 3 runs" in out
    values = [s["methods"]["tuned/ptrue"]["auroc"] for s in seeds]
    want = f"{statistics.fmean(values):.3f} ± {statistics.stdev(values):.3f}"
    assert row(out, "AUROC")[-1] == want
    accuracy = [s["accuracy"] for s in seeds]
    assert row(out, "accuracy")[0].startswith(f"{statistics.fmean(accuracy):.3f} ± ")
    for k in range(3):  # each run's deltas with their intervals
        delta = seeds[k]["deltas"]["brier"]
        assert row(out, f"{tmp_path / f's{k}'}: base/ptrue")[3].startswith(
            f"{delta['value']:+.3f} ["
        )


def test_lodo_dir_gives_fold_means(tmp_path, capsys):
    folds = [
        write_eval(tmp_path / "lodo" / f"fold{k}" / "eval", seed=10 + k)["metrics"]
        for k in range(2)
    ]
    (tmp_path / "lodo" / "aggregate.json").write_text("{}")  # lodo's own aggregate is not a run
    out = run(capsys, str(tmp_path / "lodo"))
    assert out.startswith(f"2 folds: {tmp_path / 'lodo' / 'fold0'}, {tmp_path / 'lodo' / 'fold1'}")
    ece = [f["methods"]["base/pmin"]["ece"] for f in folds]
    assert row(out, "ECE")[1] == f"{statistics.fmean(ece):.3f} ± {statistics.stdev(ece):.3f}"
    assert "mean ± sd over 2 folds" in out


def test_per_domain_table(tmp_path, capsys):
    m = write_eval(tmp_path / "run" / "eval", seed=1)["metrics"]
    out = run(capsys, str(tmp_path / "run"), "--per-domain")
    header = row(out, "domain")
    assert header == [
        "n",
        "accuracy",
        "ECE base/ptrue",
        "ECE tuned/ptrue",
        "AUROC base/ptrue",
        "AUROC tuned/ptrue",
    ]
    entry = m["per_domain"]["capitals"]
    cells = row(out, "capitals")
    assert cells[:2] == ["60", f"{entry['accuracy']:.3f}"]
    assert cells[3] == f"{entry['methods']['tuned/ptrue']['ece']:.3f}"
    assert cells[5] == f"{entry['methods']['tuned/ptrue']['auroc']:.3f}"
    out = run(capsys, str(tmp_path / "run"), "--per-domain", "--methods", "base/pmin")
    pmin = m["within_domain"]["base/pmin"]["per_domain"]["arithmetic"]["auroc"]
    assert row(out, "arithmetic")[3] == f"{pmin:.3f}"  # any method, from within_domain


def test_val_split_rescores_the_val_predictions(tmp_path, capsys):
    written = write_eval(tmp_path / "run" / "eval", seed=2)
    rows, val = written["val"]
    y = np.array([r["correct"] for r in rows])
    out = run(capsys, str(tmp_path / "run"), "--split", "val")
    assert row(out, "val") == ["base/ptrue", "base/pmin", "baseline/logreg", "tuned/ptrue"]
    assert row(out, "AUROC")[3] == f"{metrics.auroc(val['tuned/ptrue'], y):.3f}"
    assert row(out, "ECE")[1] == f"{metrics.ece(val['base/pmin'], y, n_bins=N_BINS):.3f}"
    assert "tuned/ptrue minus" not in out  # no intervals on val
    assert f"val, n = {len(rows)}, accuracy {y.mean():.3f}" in out


def test_within_domain_figures_rescored_at_another_threshold(tmp_path, capsys):
    written = write_eval(tmp_path / "run" / "eval", seed=3, min_per_class=100)
    assert written["metrics"]["methods"]["tuned/ptrue"]["auroc_within"] is None
    assert "AUROC within" not in run(capsys, str(tmp_path / "run"))  # none qualified at 100
    rows, test = written["test"]
    y = np.array([r["correct"] for r in rows])
    want = metrics.auroc_within(test["tuned/ptrue"], y, [r["domain"] for r in rows], 5).value
    out = run(capsys, str(tmp_path / "run"), "--within-min-per-class", "5")
    assert row(out, "AUROC within domains")[3] == f"{want:.3f}"
    assert row(out, "AUROC")[3] == f"{written['metrics']['methods']['tuned/ptrue']['auroc']:.3f}"


def test_bad_dirs_say_so(tmp_path):
    with pytest.raises(CalibtuneError, match="no such directory"):
        results.main([str(tmp_path / "missing")])
    with pytest.raises(CalibtuneError, match="no eval metrics.json"):
        results.main([str(tmp_path)])


def test_cli_lists_results():
    assert "results" in cli.OTHER_COMMANDS and "  results " in cli.USAGE
