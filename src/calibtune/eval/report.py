"""The eval stage's outputs: metrics.json, calibrators.json, predictions.jsonl, report.md and a
self-contained report.html (figures embedded as base64 PNG), plus the same to wandb when on.

Any number that is not available prints as "n/a (reason)", never as a made-up value.
"""

from __future__ import annotations

import base64
import html
import io
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
from omegaconf import DictConfig  # noqa: E402

from calibtune.config import save_config  # noqa: E402
from calibtune.eval.policy import RISK_GRID  # noqa: E402
from calibtune.examples import row_group  # noqa: E402
from calibtune.io import write_json_atomic, write_jsonl_atomic, write_text_atomic  # noqa: E402
from calibtune.tracking import Tracker  # noqa: E402

HEADLINE = ("ece", "smooth_ece", "brier", "nll", "auroc", "aurc")
COLORS = {"base": "#d95f02", "tuned": "#1b9e77"}


# -- formatting


def fmt(value, reason: str | None = None, signed: bool = False) -> str:
    """A number to 3 decimals, or 'n/a (reason)'."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return f"n/a ({reason})" if reason else "n/a"
    return f"{value:+.3f}" if signed else f"{value:.3f}"


def metric_cell(scores: dict, name: str) -> str:
    """One method's metric, with the reason when it is n/a."""
    reasons = scores.get("n/a", {})
    return fmt(scores.get(name), reasons.get(name) or reasons.get("all"))


def delta_cell(delta: dict | None) -> str:
    """Delta with its 95 % interval, or n/a with the reason."""
    if not delta or delta.get("value") is None:
        return fmt(None, (delta or {}).get("reason", "not computed"))
    interval = delta.get("ci95")
    text = fmt(delta["value"], signed=True)
    if interval:
        text += f" [{interval[0]:+.3f}, {interval[1]:+.3f}]"
    elif delta.get("reason"):
        text += f" ({delta['reason']})"
    return text


# -- tables (rows of strings; rendered as markdown or HTML)


def headline_table(metrics: dict, names: tuple[str, ...] = HEADLINE) -> list[list[str]]:
    """Base vs tuned ptrue with tuned-minus-base deltas and 95 % intervals (the one base-vs-tuned
    table: report, model card, `calibtune run`'s summary)."""
    base = metrics["methods"].get("base/ptrue", {})
    tuned = metrics["methods"].get("tuned/ptrue", {})
    rows = [["metric", "base ptrue", "tuned ptrue", "delta (tuned - base) [95% CI]"]]
    for name in names:
        rows.append(
            [
                name,
                metric_cell(base, name),
                metric_cell(tuned, name) if tuned else "n/a (no adapter)",
                delta_cell(metrics.get("deltas", {}).get(name)),
            ]
        )
    return rows


def methods_table(metrics: dict) -> list[list[str]]:
    """Every method and baseline on test."""
    rows = [["method", "n", *HEADLINE]]
    for method, scores in metrics["methods"].items():
        rows.append([method, str(scores.get("n", 0)), *(metric_cell(scores, n) for n in HEADLINE)])
    return rows


def domain_table(metrics: dict) -> list[list[str]]:
    """Per-domain accuracy, ECE and AUROC of base and tuned ptrue."""
    methods = [
        m
        for m in ("base/ptrue", "tuned/ptrue")
        if any(m in entry["methods"] for entry in metrics["per_domain"].values())
    ]
    header = ["domain", "n", "accuracy"]
    for method in methods:
        header += [f"{method} ECE", f"{method} AUROC"]
    rows = [header]
    for domain, entry in metrics["per_domain"].items():
        row = [domain, str(entry["n"]), fmt(entry["accuracy"])]
        for method in methods:
            scores = entry["methods"].get(method, {})
            row += [metric_cell(scores, "ece"), metric_cell(scores, "auroc")]
        rows.append(row)
    return rows


def within_table(metrics: dict) -> list[list[str]]:
    """Pooled vs within-domain AUROC / ECE / Brier of every method, then the tuned-minus-base
    within-domain deltas with their intervals."""
    pairs = (("auroc", "auroc_within"), ("ece", "ece_within"), ("brier", "brier_within"))
    header = ["method"] + [f"{name} {kind}" for name, _ in pairs for kind in ("pooled", "within")]
    rows = [header]
    for method, scores in metrics["methods"].items():
        rows.append([method, *(metric_cell(scores, k) for pair in pairs for k in pair)])
    deltas = metrics.get("deltas", {})
    row = ["delta tuned - base [95% CI]"]
    for pooled, within in pairs:
        row += [delta_cell(deltas.get(pooled)), delta_cell(deltas.get(within))]
    rows.append(row)
    return rows


def best_baseline_table(metrics: dict) -> list[list[str]]:
    """Tuned ptrue vs the baseline best on val (by val AUROC): both sides and the delta with its
    95 % cluster-bootstrap interval, pooled and within-domain."""
    versus = metrics.get("deltas_vs_best_baseline") or {}
    baseline = versus.get("baseline")
    base = metrics["methods"].get(baseline, {}) if baseline else {}
    tuned = metrics["methods"].get("tuned/ptrue", {})
    label = f"{baseline} (best val AUROC)" if baseline else "best baseline: n/a"
    rows = [["metric", label, "tuned ptrue", "delta (tuned - baseline) [95% CI]"]]
    for name in ("auroc", "auroc_within", "ece", "ece_within", "brier", "brier_within"):
        delta = (versus.get("deltas") or {}).get(name)
        rows.append([name, metric_cell(base, name), metric_cell(tuned, name), delta_cell(delta)])
    return rows


def summary_table(metrics: dict) -> list[list[str]]:
    """Full-ECE, selective prediction, what tuning cost, worst domain."""
    full = metrics["full_ece"]
    rows = [["quantity", "base", "tuned"]]
    has_tuned = "tuned" in full
    rows.append(
        ["Full-ECE (T = 1)", fmt(full.get("base")), fmt(full.get("tuned")) if has_tuned else "n/a"]
    )
    rows.append(
        [
            "token temperature minimising Full-ECE",
            f"{full['base_best_temperature']:.2f} ({fmt(full['base_at_best_temperature'])})",
            f"{full['tuned_best_temperature']:.2f} ({fmt(full['tuned_at_best_temperature'])})"
            if has_tuned
            else "n/a",
        ]
    )
    selective = metrics["selective"]
    for key in ("threshold", "coverage", "risk", "escalation_rate"):
        label = f"at target risk {selective['target_risk']:.2f}: {key}"
        cells = []
        for method in ("base/ptrue", "tuned/ptrue"):
            entry = selective.get(method)
            reason = (
                "no threshold on val reaches the target"
                if entry and entry["threshold"] is None
                else "no adapter"
            )
            cells.append(fmt(entry.get(key), reason) if entry else "n/a (no adapter)")
        rows.append([label, *cells])
    worst = metrics["worst_domain_ece"]
    rows.append(
        [
            "worst-domain ECE",
            *(
                f"{w['ece']:.3f} ({w['domain']}, n={w['n']})" if w else "n/a"
                for w in (worst.get("base/ptrue"), worst.get("tuned/ptrue"))
            ),
        ]
    )
    cost = metrics.get("tuning_cost")
    sample = f" ({cost['n']} sampled test examples)" if cost else ""
    rows.append(
        [
            f"greedy answers identical to the base model's{sample}",
            "-",
            fmt(metrics.get("answer_agreement"), "no adapter"),
        ]
    )
    rows.append(
        [
            f"accuracy of greedy answers{sample}",
            fmt(cost["base_accuracy"]) if cost else fmt(metrics["accuracy"]),
            fmt(cost.get("tuned_accuracy"), "not graded") if cost else "n/a (no adapter)",
        ]
    )
    verbalized = metrics["verbalized"]
    if verbalized.get("enabled"):
        rows.append(
            [
                "verbalized: unparseable replies",
                f"{verbalized['n_unparseable']} of {verbalized['n_asked']}",
                "-",
            ]
        )
    return rows


def domain_calibration_table(metrics: dict) -> list[list[str]]:
    """Global vs per-domain calibrator on test: ECE per domain, pooled, and the domain mean."""
    block = metrics.get("per_domain_calibration") or {}
    rows = [["domain", "n", "accuracy", "calibrator", "ECE global map", "ECE per-domain map"]]
    if "domains" not in block:
        return [*rows, ["n/a", "", "", "", fmt(None, block.get("reason")), ""]]
    for domain, entry in block["domains"].items():
        rows.append(
            [
                domain,
                str(entry["n"]),
                fmt(entry["accuracy"]),
                entry["calibrator"],
                fmt(entry["global_ece"]),
                fmt(entry["per_domain_ece"]),
            ]
        )
    mean = block["mean_domain_ece"]
    cells = [delta_cell(mean["global"]), delta_cell(mean["per_domain"])]
    rows.append(["mean over domains [95% CI]", "", "", "", *(c.lstrip("+") for c in cells)])
    floor = [mean["floor"][name] for name in ("global", "per_domain")]
    cells = [f"{fmt(f['mean'])} ± {fmt(f['sd'])}" for f in floor]
    rows.append(["mean over domains if calibrated (floor)", "", "", "", *cells])
    pooled = block["pooled"]
    rows.append(
        ["pooled", "", "", "", fmt(pooled["global"]["ece"]), fmt(pooled["per_domain"]["ece"])]
    )
    rows.append(["maps fitted on", "", "", "", fit_rows_cell(block.get("fit_rows") or {}), ""])
    return rows


def fit_rows_cell(fit_rows: dict) -> str:
    """Which rows both maps were fitted on: val alone, or val + train scored out of fold, and why."""
    if fit_rows.get("used"):
        source = f"val + {fit_rows['n_train']} train rows scored out of fold"
    else:
        source = "val"
    losses = fit_rows.get("held_out_log_loss")
    if losses:
        return (
            f"{source} (add_train={fit_rows['add_train']}; held-out log loss on val folds: "
            f"val {losses['val']:.4f}, val + train {losses['val+train']:.4f})"
        )
    return f"{source} (add_train={fit_rows.get('add_train')}; {fit_rows.get('reason', 'always')})"


def policy_units(block: dict) -> str:
    """What the policy's p-values count as independent: rows, or val's entity groups."""
    groups = block.get("val_groups")
    if groups is None:
        return block.get("unit", "row")
    clusters = f"{groups['n']} entity groups of up to {groups['largest']} rows"
    if block.get("unit") == "group":
        return f"entity groups ({clusters}; population risk)"
    return f"rows ({groups['rows']}, exchangeable; val holds {clusters})"


def policy_table(metrics: dict) -> list[list[str]]:
    """The answer / retrieve / escalate policy: thresholds from val, shares and risk on test."""
    block = metrics.get("policy") or {}
    rows = [["quantity", "value [95% CI]"]]
    if "test" not in block:
        return [*rows, ["policy", fmt(None, block.get("reason"))]]
    rows.append(
        [
            "target: answered risk / escalate above / delta",
            f"{block['answer_risk']:.2f} / {block['escalate_risk']:.2f} / {block['delta']:.2f}",
        ]
    )
    rows.append(["p-value units (val)", policy_units(block)])
    rows.append(["answer threshold", fmt(block["answer_threshold"], "none certified")])
    rows.append(["escalate threshold", fmt(block["escalate_threshold"], "none certified")])
    test = block["test"]
    for action, share in test["shares"].items():
        rows.append([f"share {action} (test)", delta_cell(share).lstrip("+")])
    rows.append(["realised risk of answered (test)", delta_cell(test["answered_risk"]).lstrip("+")])
    rows.append(
        ["risk of non-escalated (test)", delta_cell(test["non_escalated_risk"]).lstrip("+")]
    )
    certified = [row for row in block.get("certifiable", []) if row["threshold"] is not None]
    lowest = f"none up to {RISK_GRID[-1]:.2f}"
    if certified:
        row = certified[0]
        lowest = (
            f"{row['answer_risk']:.2f} (answers {fmt(row['test']['value'])} of test, "
            f"realised risk {fmt(row['test_answered_risk']['value'], 'none answered')})"
        )
    rows.append(["lowest answer risk certifiable on this val", lowest])
    return rows


def markdown_table(rows: list[list[str]]) -> str:
    """Rows as a GitHub markdown table (first row is the header)."""
    lines = ["| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows[1:]]
    return "\n".join(lines)


def html_table(rows: list[list[str]]) -> str:
    """Rows as an HTML table (first row is the header)."""
    head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
    body = "".join(
        "<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:]
    )
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# -- figures


def figure_png(fig) -> bytes:
    """The figure as PNG bytes (110 dpi, tight bounding box); closes the figure."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buffer.getvalue()


def reliability_figure(metrics: dict) -> bytes:
    """Base and tuned reliability diagrams overlaid, with their confidence histograms below."""
    fig, ax = plt.subplots(figsize=(5.5, 5))
    ax.plot([0, 1], [0, 1], color="grey", linestyle="--", linewidth=1, label="perfect calibration")
    for side in ("base", "tuned"):
        scores = metrics["methods"].get(f"{side}/ptrue") or {}
        bins = scores.get("reliability")
        if not bins:
            continue
        count = np.asarray(bins["count"])
        edges = np.asarray(bins["edges"])
        centers, width = (edges[:-1] + edges[1:]) / 2, edges[1] - edges[0]
        used = count > 0
        ax.bar(
            centers,
            0.25 * count / count.sum(),
            width=width,
            alpha=0.3,
            color=COLORS[side],
            label=f"{side}: share of examples (x4)",
        )
        ax.plot(
            np.asarray(bins["confidence"])[used],
            np.asarray(bins["accuracy"])[used],
            marker="o",
            color=COLORS[side],
            label=f"{side} ptrue (ECE {fmt(scores.get('ece'))})",
        )
    _unit_square(ax, "confidence", "accuracy", "Reliability: base vs tuned (test)")
    ax.legend(loc="lower right", fontsize=8)
    return figure_png(fig)


def _unit_square(ax, xlabel: str, ylabel: str, title: str) -> None:
    """Axes over [0, 1] x [0, 1] with labels and a title."""
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel=xlabel, ylabel=ylabel, title=title)


def risk_coverage_figure(metrics: dict) -> bytes:
    """Risk-coverage curves of base and tuned ptrue."""
    fig, ax = plt.subplots(figsize=(5.5, 4))
    for method, curve in metrics["risk_coverage"].items():
        if curve:
            side = method.split("/")[0]
            aurc = metrics["methods"][method].get("aurc")
            ax.step(
                curve["coverage"],
                curve["risk"],
                where="post",
                color=COLORS[side],
                label=f"{method} (AURC {fmt(aurc)})",
            )
    ax.axhline(1 - metrics["accuracy"], color="grey", linestyle=":", label="risk answering all")
    _unit_square(ax, "coverage", "risk (error rate of answered)", "Risk-coverage (test)")
    ax.legend(fontsize=8)
    return figure_png(fig)


def figures(metrics: dict) -> dict[str, bytes]:
    """All report figures as PNG bytes by file name."""
    return {
        "reliability.png": reliability_figure(metrics),
        "risk_coverage.png": risk_coverage_figure(metrics),
    }


# -- documents


def sections(metrics: dict) -> list[tuple[str, list[list[str]]]]:
    """The report's tables, in order, with titles."""
    return [
        ("Calibration of base vs tuned (test)", headline_table(metrics)),
        ("All methods and baselines (recalibrators fitted on val only)", methods_table(metrics)),
        ("Full-ECE, selective prediction and what tuning cost", summary_table(metrics)),
        ("Per domain", domain_table(metrics)),
        ("Per-domain vs global calibrator (test)", domain_calibration_table(metrics)),
        ("Decision policy: answer / retrieve / escalate", policy_table(metrics)),
        (
            "Pooled vs within-domain (mean over domains with both classes well represented)",
            within_table(metrics),
        ),
        ("Tuned vs the best baseline on val (by val AUROC)", best_baseline_table(metrics)),
    ]


def intro(metrics: dict) -> str:
    """One paragraph saying what was evaluated."""
    return (
        f"Model `{metrics['model']}`, adapter `{metrics['adapter']}`; {metrics['n_test']} test and "
        f"{metrics['n_val']} val examples; test accuracy {metrics['accuracy']:.3f}; "
        f"{metrics['n_bins']} bins; deltas are tuned minus base with 95 % paired-bootstrap "
        f"intervals ({metrics['n_boot']} resamples, seed {metrics['seed']})."
    )


def render_markdown(metrics: dict, image_names: list[str]) -> str:
    """report.md: tables and links to the PNG files beside it."""
    parts = ["# calibtune eval report", "", intro(metrics), ""]
    for name in image_names:
        parts += [f"![{name}]({name})", ""]
    for title, rows in sections(metrics):
        parts += [f"## {title}", "", markdown_table(rows), ""]
    return "\n".join(parts)


def render_html(metrics: dict, images: dict[str, bytes]) -> str:
    """report.html: self-contained (images as base64 data URIs), no external resources."""
    style = (
        "body{font-family:sans-serif;max-width:1100px;margin:2em auto;color:#222}"
        "table{border-collapse:collapse;margin:1em 0;font-size:14px}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:right}"
        "td:first-child,th:first-child{text-align:left}img{max-width:48%;margin:0.5%}"
    )
    body = [f"<h1>calibtune eval report</h1><p>{html.escape(intro(metrics))}</p><div>"]
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<img alt="{name}" src="data:image/png;base64,{data}">')
    body.append("</div>")
    for title, rows in sections(metrics):
        body.append(f"<h2>{html.escape(title)}</h2>{html_table(rows)}")
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>calibtune eval report</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )


def prediction_rows(test_rows: list[dict], confidences: dict[str, np.ndarray]) -> list[dict]:
    """One record per example: id, domain, entity group, correct and every method's confidence."""
    records = []
    for index, row in enumerate(test_rows):
        record = {
            "id": row["id"],
            "domain": row.get("domain"),
            "group": row_group(row),
            "correct": row["correct"],
        }
        if row.get("qid") is not None:
            record["qid"] = row["qid"]
        for method, values in confidences.items():
            value = float(values[index])
            record[method] = None if math.isnan(value) else value
        records.append(record)
    return records


def write_outputs(
    cfg: DictConfig,
    output_dir: Path,
    metrics: dict,
    calibrators: dict,
    splits: dict[str, tuple[list[dict], dict[str, np.ndarray]]],
    decision_policy: dict | None = None,
) -> None:
    """Render everything first, then write each file atomically (and log to wandb when on).

    `splits` maps "test" (and "val") to its rows and per-method confidences: predictions.jsonl
    and val_predictions.jsonl; the policy, when fitted, goes to policy.json."""
    images = figures(metrics)
    documents = {
        "report.md": render_markdown(metrics, list(images)),
        "report.html": render_html(metrics, images),
    }
    calibrator_file = {
        "schema_version": 1,
        "fitted_on": "val",
        "n_val": metrics["n_val"],
        "calibrators": calibrators,
    }
    output_dir.mkdir(parents=True, exist_ok=True)
    for name, png in images.items():
        tmp = output_dir / f".{name}.tmp"
        tmp.write_bytes(png)
        tmp.replace(output_dir / name)
    for split, (rows, confidences) in splits.items():
        name = "predictions.jsonl" if split == "test" else f"{split}_predictions.jsonl"
        write_jsonl_atomic(output_dir / name, prediction_rows(rows, confidences))
    if decision_policy is not None:
        write_json_atomic(output_dir / "policy.json", decision_policy)
    write_json_atomic(output_dir / "calibrators.json", calibrator_file)
    save_config(cfg, output_dir / "config.yaml")
    for name, text in documents.items():
        write_text_atomic(output_dir / name, text)
    write_json_atomic(output_dir / "metrics.json", metrics)
    log_to_tracker(cfg, output_dir, metrics)


def flat_scalars(metrics: dict) -> dict[str, float]:
    """Headline numbers as flat `eval/...` scalars for the tracker."""
    scalars = {"eval/accuracy": metrics["accuracy"]}
    for method, scores in metrics["methods"].items():
        for name in HEADLINE:
            if scores.get(name) is not None:
                scalars[f"eval/{method}/{name}"] = scores[name]
    for name, delta in metrics["deltas"].items():
        if delta.get("value") is not None:
            scalars[f"eval/delta/{name}"] = delta["value"]
    for key in ("base", "tuned"):
        if metrics["full_ece"].get(key) is not None:
            scalars[f"eval/full_ece/{key}"] = metrics["full_ece"][key]
    if metrics.get("answer_agreement") is not None:
        scalars["eval/answer_agreement"] = metrics["answer_agreement"]
    return scalars


def log_to_tracker(cfg: DictConfig, output_dir: Path, metrics: dict) -> None:
    """Scalars to metrics.jsonl (+ wandb); tables and figures to wandb when it is on."""
    tracker = Tracker(output_dir, cfg.get("logger"), cfg)
    try:
        tracker.log(flat_scalars(metrics), step=0)
        if tracker.run is not None:
            import wandb

            payload = {
                f"eval/{name}": wandb.Image(str(output_dir / name))
                for name in ("reliability.png", "risk_coverage.png")
            }
            for title, rows in sections(metrics):
                payload[f"eval/table/{title.split(' (')[0]}"] = wandb.Table(
                    columns=rows[0], data=rows[1:]
                )
            tracker.run.log(payload, step=0)
    finally:
        tracker.finish()
