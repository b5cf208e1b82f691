"""calibtune monitor on synthetic traffic: input checks, drift alarms, windows, refit, rollback."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import numpy as np
import pytest

from calibtune.errors import InputError
from calibtune.eval.recalibrate import apply_calibrator, fit_domain_calibrators
from calibtune.io import write_json_atomic, write_jsonl_atomic
from calibtune.serve.monitor import (
    Monitor,
    read_log,
    reference_from_rows,
    refit_calibrator,
    rollback,
    run_monitor,
    window_stats,
)

START = datetime(2026, 1, 1, tzinfo=UTC)


def traffic(n: int, seed: int, domains=("a", "b"), shift: float = 0.0, offset: int = 0) -> list:
    """Scored rows: calibrated confidences (minus `shift` in accuracy), one per minute."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(n):
        c = float(rng.uniform(0.2, 0.95))
        rows.append(
            {
                "id": f"r{offset + i}",
                "timestamp": START + timedelta(minutes=offset + i),
                "domain": str(domains[int(rng.integers(len(domains)))]),
                "confidence": c,
                "raw_confidence": c,
                "correct": int(rng.uniform() < max(c - shift, 0.0)),
            }
        )
    return rows


def as_log(rows: list[dict]) -> list[dict]:
    """Rows as written to a JSONL log (ISO timestamps)."""
    return [{**r, "timestamp": r["timestamp"].isoformat()} for r in rows]


def test_stationary_streams_rarely_alarm():
    streams = 20
    alarmed = 0
    for seed in range(streams):
        rows = traffic(1500, seed)
        monitor = Monitor(reference_from_rows(rows[:500]), horizon=1000, false_alarm=0.05)
        alarmed += bool(monitor.update(rows[500:]))
    assert alarmed <= 2  # the bound is 5 % per log; 3+ of 20 has probability < 8 % at 5 %


def test_overconfident_drift_and_unseen_domain_and_mix_alarm():
    reference = reference_from_rows(traffic(500, 0))
    stationary = traffic(400, 1, offset=500)
    drifted = traffic(600, 2, domains=("a", "b", "new"), shift=0.35, offset=900)
    monitor = Monitor(reference, horizon=1000, unseen_min_count=20)
    assert monitor.update(stationary) == []
    alarms = monitor.update(drifted)
    kinds = {(a["type"], a["scope"]) for a in alarms}
    assert ("unseen_domain", "new") in kinds and ("calibration_drift", "overall") in kinds
    drift = next(a for a in alarms if a["scope"] == "overall")
    assert 400 < drift["index"] < 1000  # after the change, within the drifted stretch
    mix = Monitor(reference, horizon=2000, mix_window=200)
    assert any(
        a["type"] == "domain_mix" for a in mix.update(traffic(1000, 3, domains=("a",) * 9 + ("b",)))
    )


def test_window_without_labels_reports_null_with_reason():
    rows = [{**r, "correct": None} for r in traffic(5, 0)]
    stats = window_stats(rows, 15, None)
    assert stats["ece"] is None and "no labeled" in stats["reason"] and stats["volume"] == 5
    assert window_stats([], 15, None) == {"volume": 0, "reason": "no items in this window"}


BAD_ROWS = [
    ({"confidence": 1.5}, "confidence"),
    ({"timestamp": "yesterday"}, "timestamp"),
    ({"domain": None}, "domain"),
    ({"correct": 2}, "correct"),
    ({"id": None}, "id"),
]


def test_bad_rows_name_file_line_field_and_nothing_is_written(compose_cfg, tmp_path):
    log_path = tmp_path / "log.jsonl"
    for change, field in BAD_ROWS:
        rows = as_log(traffic(10, 0))
        rows[6] = {**rows[6], **change}
        write_jsonl_atomic(log_path, rows)
        with pytest.raises(InputError, match=rf"log\.jsonl:7: field '{field}'"):
            read_log(log_path)
    cfg = compose_cfg("monitor", [f"monitor.input={log_path}", f"run_dir={tmp_path / 'run'}"])
    with pytest.raises(InputError, match="field 'id'"):
        run_monitor(cfg)
    assert not (tmp_path / "run").exists()


def test_cli_writes_json_and_html_and_fails_on_alarm(compose_cfg, tmp_path):
    rows = traffic(700, 0) + traffic(600, 2, shift=0.35, offset=700)
    rows[-1]["correct"] = None  # partial feedback
    log_path = tmp_path / "log.jsonl"
    write_jsonl_atomic(log_path, as_log(rows))
    overrides = [
        f"monitor.input={log_path}",
        f"run_dir={tmp_path / 'run'}",
        "monitor.window.size=100",
    ]
    out = run_monitor(compose_cfg("monitor", overrides))
    summary = json.loads((out / "monitor.json").read_text())
    assert summary["alarms"] and summary["alarms"][0]["type"] == "calibration_drift"
    assert summary["alarms"][0]["index"] >= 200  # the drift starts 200 rows after the reference
    assert len(summary["windows"]) == 8  # 800 rows after the 500-row reference
    assert (out / "monitor.html").read_text().count("data:image/png;base64") == 4
    with pytest.raises(SystemExit) as exited:
        run_monitor(compose_cfg("monitor", [*overrides, "monitor.fail_on_alarm=true"]))
    assert exited.value.code == 1
    quiet = tmp_path / "quiet.jsonl"
    write_jsonl_atomic(quiet, as_log(traffic(700, 5)))
    out = run_monitor(
        compose_cfg("monitor", [f"monitor.input={quiet}", f"run_dir={tmp_path / 'q'}"])
    )
    assert json.loads((out / "monitor.json").read_text())["alarms"] == []


def test_refit_promotes_a_better_calibrator_and_rollback_restores(compose_cfg, tmp_path):
    before = traffic(600, 0)
    old = fit_domain_calibrators(
        "platt",
        [r["raw_confidence"] for r in before],
        [r["correct"] for r in before],
        [r["domain"] for r in before],
        40,
    )
    export = tmp_path / "export"
    write_json_atomic(export / "calibtune.json", {"calibrator": {"name": "x", "params": old}})
    after = traffic(1500, 1, shift=0.3, offset=600)  # the model got overconfident everywhere
    log_path = tmp_path / "log.jsonl"
    write_jsonl_atomic(log_path, as_log(before + after))
    overrides = [
        f"monitor.input={log_path}",
        f"run_dir={tmp_path / 'run'}",
        "monitor.refit=true",
        f"monitor.export={export}",
    ]
    out = run_monitor(compose_cfg("monitor", overrides))
    refit = json.loads((out / "monitor.json").read_text())["refit"]
    assert refit["promoted"] and refit["version"] == 1
    assert refit["held_back"]["new"]["brier"] < refit["held_back"]["old"]["brier"]
    active = json.loads((export / "calibtune.json").read_text())
    assert active["calibrator_version"] == 1
    raw = np.array([0.8])
    assert apply_calibrator(active["calibrator"]["params"], raw, ["a"]) < apply_calibrator(
        old, raw, ["a"]
    )
    rollback(export, "previous")
    restored = json.loads((export / "calibtune.json").read_text())
    assert restored["calibrator_version"] == 0 and restored["calibrator"]["params"] == old
    assert Path(export / "calibrator_versions" / "v0001.json").is_file()


def test_refit_pulls_toward_the_identity_as_adapt_does(compose_cfg, tmp_path):
    """The refit fits its maps with `calibtune adapt`'s pull (`monitor.refitting.prior_strength`
    defaults to `adapt.prior_strength`): on a few labeled rows the pulled map stays nearer the
    identity than the unpulled one."""
    cfg = compose_cfg("monitor", [f"run_dir={tmp_path}"])
    assert cfg.monitor.refitting.prior_strength == cfg.adapt.prior_strength > 0
    old = {"kind": "platt", "a": 1.0, "b": 0.0}
    rows = traffic(80, 3, domains=("a",), shift=0.25)  # overconfident: the map moves off identity
    maps = {}
    for strength in (0.0, float(cfg.adapt.prior_strength)):
        settings = cfg.monitor.refitting.copy()
        settings.prior_strength, settings.min_count = strength, 10
        maps[strength] = refit_calibrator(old, rows, settings)["params"]["domains"]["a"]

    def distance(params: dict) -> float:
        return abs(params["a"] - 1.0) + abs(params["b"])

    assert 0 < distance(maps[float(cfg.adapt.prior_strength)]) < distance(maps[0.0])
