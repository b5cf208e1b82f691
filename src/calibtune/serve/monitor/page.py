"""monitor.html: the monitor's timelines (ECE, confidence vs accuracy, domain mix, drift
statistic) with the alarms marked, in one self-contained page."""

from __future__ import annotations

import numpy as np


def timeline_figures(summary: dict) -> dict[str, bytes]:
    """ECE, confidence vs accuracy, domain shares and the drift statistics over time, with the
    alarms marked as vertical lines."""
    import matplotlib.pyplot as plt

    from calibtune.eval.report import figure_png

    windows = summary["windows"]
    x = [w["window"] for w in windows]
    alarm_windows = [
        (window_of(windows, a["timestamp"]), f"{a['type']} ({a['scope']})")
        for a in summary["alarms"]
    ]

    def mark(ax) -> None:
        for position, label in alarm_windows:
            ax.axvline(position, color="red", linestyle="--", linewidth=1)
            ax.text(position, ax.get_ylim()[1], label, rotation=90, va="top", fontsize=7)

    figures = {}
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(x, [w["overall"].get("ece") for w in windows], marker="o", label="overall", color="k")
    for domain in windows[0]["domains"] if windows else []:
        ax.plot(x, [w["domains"][domain].get("ece") for w in windows], alpha=0.5, label=domain)
    ax.set(xlabel="window", ylabel="ECE (labeled items)", title="ECE per window")
    ax.legend(fontsize=7, ncol=3)
    mark(ax)
    figures["ece.png"] = figure_png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    ax.plot(x, [w["overall"].get("labeled_mean_confidence") for w in windows], label="confidence")
    ax.plot(x, [w["overall"].get("accuracy") for w in windows], label="accuracy")
    ax.set(xlabel="window", ylabel="mean", title="Mean confidence vs accuracy (labeled, overall)")
    ax.legend(fontsize=8)
    mark(ax)
    figures["confidence_accuracy.png"] = figure_png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    bottom = np.zeros(len(windows))
    for domain in windows[0]["domains"] if windows else []:
        share = np.array(
            [w["domains"][domain]["volume"] / max(w["overall"]["volume"], 1) for w in windows]
        )
        ax.bar(x, share, bottom=bottom, label=domain)
        bottom += share
    ax.set(xlabel="window", ylabel="share of volume", title="Domain mix")
    ax.legend(fontsize=7, ncol=3)
    mark(ax)
    figures["domain_mix.png"] = figure_png(fig)
    fig, ax = plt.subplots(figsize=(8, 3.5))
    for scope, trace in summary["traces"]["calibration"].items():
        if trace:
            ax.plot(
                *zip(*trace, strict=True), label=scope, linewidth=2 if scope == "overall" else 1
            )
    threshold = summary["tests"]["calibration"]["overall"]["threshold"]
    ax.axhline(threshold, color="red", linestyle=":", label="alarm threshold (overall)")
    for alarm in summary["alarms"]:
        ax.axvline(alarm["index"], color="red", linestyle="--", linewidth=1)
    ax.set(xlabel="item", ylabel="log e-CUSUM", title="Calibration drift statistic")
    ax.legend(fontsize=7, ncol=3)
    figures["drift_statistic.png"] = figure_png(fig)
    return figures


def window_of(windows: list[dict], timestamp: str) -> int:
    """The window whose span holds `timestamp` (the last one starting at or before it)."""
    starts = [w["window"] for w in windows if w["start"] <= timestamp]
    return starts[-1] if starts else 0


def render_page(summary: dict, images: dict[str, bytes]) -> str:
    """monitor.html: self-contained (figures as data URIs), alarms listed first."""
    import base64
    import html

    from calibtune.eval.report import html_table

    alarms = [["type", "scope", "item", "timestamp", "id"]] + [
        [a["type"], a["scope"], str(a["index"]), a["timestamp"], str(a["id"])]
        for a in summary["alarms"]
    ]
    body = [
        "<h1>calibtune monitor</h1>",
        f"<p>{summary['n_items']} items, {summary['n_labeled']} labeled; "
        f"{len(summary['alarms'])} alarm(s).</p>",
        html_table(alarms) if summary["alarms"] else "<p>No alarms.</p>",
    ]
    for name, png in images.items():
        data = base64.b64encode(png).decode("ascii")
        body.append(f'<img alt="{html.escape(name)}" src="data:image/png;base64,{data}">')
    style = "body{font-family:sans-serif;max-width:1100px;margin:2em auto}img{max-width:100%}"
    return (
        '<!DOCTYPE html><html><head><meta charset="utf-8"><title>calibtune monitor</title>'
        f"<style>{style}</style></head><body>{''.join(body)}</body></html>\n"
    )
