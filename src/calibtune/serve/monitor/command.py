"""`calibtune monitor`: calibration of scored traffic over time, drift alarms, safe refits.

    calibtune monitor monitor.input=<log.jsonl> [monitor.reference=<eval output dir>]
                      [monitor.fail_on_alarm=true] [run_dir=<dir>]
    calibtune monitor monitor.input=<log.jsonl> monitor.refit=true monitor.export=<export dir>
    calibtune monitor monitor.export=<export dir> monitor.rollback=previous

Writes monitor.json and monitor.html (see `calibtune.serve.monitor.drift` for the alarms).
"""

from __future__ import annotations

import json
from pathlib import Path

from calibtune.errors import ConfigError, InputError
from calibtune.io import write_json_atomic, write_text_atomic
from calibtune.serve.monitor.drift import Monitor, reference_from_eval, reference_from_rows
from calibtune.serve.monitor.log import read_log
from calibtune.serve.monitor.page import render_page, timeline_figures
from calibtune.serve.monitor.refit import refit_calibrator
from calibtune.serve.monitor.versions import SERVE_CONFIG, promote, read_serve_config, rollback


def load_reference(settings, rows: list[dict]) -> tuple[dict, list[dict]]:
    """The reference and the rows to monitor: an eval dir's split, or the log's first
    `reference_size` labeled items (then only the rows after them are monitored)."""
    if settings.reference:
        return reference_from_eval(
            settings.reference, settings.reference_method, settings.reference_split
        ), rows
    labeled_positions = [i for i, r in enumerate(rows) if r["correct"] is not None]
    if len(labeled_positions) <= settings.reference_size:
        raise ConfigError(
            f"monitor.input has {len(labeled_positions)} labeled rows, not more than "
            f"monitor.reference_size={settings.reference_size}: give monitor.reference=<eval dir>"
        )
    end = labeled_positions[settings.reference_size - 1] + 1
    return reference_from_rows(rows[:end]), rows[end:]


def load_policy(settings) -> dict | None:
    """The policy for the action mix of rows without an `action` (`auto`: the reference's)."""
    setting = settings.policy
    if setting == "auto":
        path = Path(settings.reference or "") / "policy.json"
        return json.loads(path.read_text()) if settings.reference and path.is_file() else None
    if setting is None:
        return None
    return json.loads(Path(setting).read_text())


def build_monitor(settings, reference: dict, rows: list[dict]) -> Monitor:
    """A Monitor with the config's settings; horizon null = this log's item count."""
    return Monitor(
        reference,
        false_alarm=settings.false_alarm,
        horizon=settings.horizon or len(rows),
        window_size=settings.window.size,
        window_time=settings.window.time,
        mix_window=settings.mix_window,
        unseen_min_count=settings.unseen_min_count,
        min_domain_reference=settings.min_domain_reference,
        n_bins=settings.n_bins,
        policy=load_policy(settings),
    )


def run_monitor(cfg) -> Path:
    """`calibtune monitor`: monitor.json + monitor.html; refit / rollback when asked."""
    settings = cfg.monitor
    if settings.rollback is not None:
        rollback(settings.export, settings.rollback)
        return Path(settings.export)
    if not settings.input:
        raise ConfigError("set monitor.input=<scored traffic log.jsonl>")
    rows = read_log(settings.input)  # validates every row before any work
    if settings.refit and not any(r.get("raw_confidence") is not None for r in rows):
        raise InputError(settings.input, None, "raw_confidence", "needed by monitor.refit=true")
    reference, monitored = load_reference(settings, rows)
    monitor = build_monitor(settings, reference, monitored)
    monitor.update(monitored)
    summary = monitor.summary()
    if settings.refit:
        summary["refit"] = run_refit(settings, monitored)
    output_dir = Path(settings.output_dir)
    page = render_page(summary, timeline_figures(summary))
    write_json_atomic(output_dir / "monitor.json", summary)
    write_text_atomic(output_dir / "monitor.html", page)
    print(f"monitor: {len(summary['alarms'])} alarm(s) -> {output_dir / 'monitor.json'}")
    for alarm in summary["alarms"]:
        print(f"  ALARM {alarm['type']} ({alarm['scope']}) at item {alarm['index']}")
    if settings.fail_on_alarm and summary["alarms"]:
        raise SystemExit(1)
    return output_dir


def run_refit(settings, rows: list[dict]) -> dict:
    """Refit against the export's active calibrator; promote a better one as a new version."""
    export_dir = Path(settings.export)
    serve = read_serve_config(export_dir)
    if not serve.get("calibrator"):
        raise ConfigError(f"{export_dir / SERVE_CONFIG} has no calibrator to compare against")
    result = refit_calibrator(serve["calibrator"]["params"], rows, settings.refitting)
    if result["promoted"]:
        result["version"] = promote(export_dir, result)
    result.pop("params", None)
    return result
