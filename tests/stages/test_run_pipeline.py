"""`calibtune run` end to end on the tiny model, and run again in the same run_dir: finished
stages made with the same settings are reused, a changed train setting re-trains on the same
labeled set, a changed data setting redoes everything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures import SMALL_DATA, TWO_STEP_TRIAL, run_cli, tiny_overrides_for
from fixtures.labeled import record_labeled_set_signals, write_synthetic_labeled_set
from omegaconf import OmegaConf
from safetensors.torch import load_file

from calibtune.config import compose, save_config
from calibtune.models import load_tokenizer

EVAL_SMALL = [
    "eval.recalibrators=[temperature]",
    "eval.token_temperature.steps=2",
    "eval.n_boot=20",
    "eval.verbalized.enabled=false",
    "eval.agreement_max_examples=4",
    "eval.progress=false",
]


def outputs(run_dir: Path) -> dict[str, int]:
    """Modification times (ns) of the files each stage writes last."""
    files = {
        "data": run_dir / "data" / "manifest.json",
        "train": run_dir / "train" / "manifest.json",
        "eval": run_dir / "eval" / "metrics.json",
    }
    return {stage: path.stat().st_mtime_ns for stage, path in files.items()}


def eval_pairs(run_dir: Path, path: Path) -> tuple[list[dict], Path]:
    """The run's test predictions, and its (question, answer) pairs in their order written to
    `path` for `calibtune score`."""
    predictions = [json.loads(line) for line in (run_dir / "eval" / "predictions.jsonl").open()]
    rows = {r["id"]: r for r in map(json.loads, (run_dir / "data" / "test.jsonl").open())}
    pairs = [
        {"id": p["id"], "question": rows[p["id"]]["question"], "answer": rows[p["id"]]["response"]}
        for p in predictions
    ]
    path.write_text("".join(json.dumps(pair) + "\n" for pair in pairs))
    return predictions, path


def test_run_reuses_finished_stages_with_the_same_settings(tiny_model_dir: Path, tmp_path: Path):
    """With method=lora end to end (data, train, eval that measures the answers' agreement)."""
    run_dir = tmp_path / "run"
    base = [*tiny_overrides_for(tiny_model_dir, run_dir), *SMALL_DATA, *TWO_STEP_TRIAL, *EVAL_SMALL]
    base.append("method=lora")  # the tiny model answers nothing right: no labels for a probe

    first = run_cli("run", *base, cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    assert "answer agreement" in first.stdout
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["n_test"] > 0
    assert metrics["tuning_cost"]["n"] == 4  # a LoRA can change answers: generated and compared
    made = outputs(run_dir)

    again = run_cli("run", *base, "eval.n_boot=30", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    log = again.stdout + again.stderr
    assert "data stage: reusing" in log and "train stage: reusing" in log
    now = outputs(run_dir)
    assert now["data"] == made["data"] and now["train"] == made["train"]
    assert now["eval"] != made["eval"]

    retrain = run_cli("run", *base, "train.max_steps=3", "train.eval_every=3", cwd=tmp_path)
    assert retrain.returncode == 0, retrain.stderr[-3000:]
    log = retrain.stdout + retrain.stderr
    assert "data stage: reusing" in log and "train stage: reusing" not in log
    after = outputs(run_dir)
    assert after["data"] == made["data"] and after["train"] != made["train"]
    manifest = json.loads((run_dir / "train" / "manifest.json").read_text())
    assert manifest["steps"] == 3

    redo = run_cli("run", *base, "data.max_new_tokens=3", cwd=tmp_path)
    assert redo.returncode == 0, redo.stderr[-3000:]
    assert "data stage: reusing" not in redo.stdout + redo.stderr
    assert outputs(run_dir)["data"] != made["data"]


def test_probe_method_runs_end_to_end_and_scores_like_eval(tiny_model_dir: Path, tmp_path: Path):
    run_dir, calibrator = tmp_path / "probe-run", "tuned/ptrue+temperature"
    base = [*tiny_overrides_for(tiny_model_dir, run_dir), *SMALL_DATA, *TWO_STEP_TRIAL, *EVAL_SMALL]
    # a labeled set with both grades in every split (the tiny model answers nothing right), made
    # with this run's settings, so that `calibtune run` reuses it as its data stage
    cfg = compose("run", [*base, "method=probe"])
    sizes = {"train": 24, "val": 16, "test": 16}
    write_synthetic_labeled_set(run_dir / "data", load_tokenizer(cfg.model), cfg.prompt, sizes)
    save_config(cfg, run_dir / "data" / "config.yaml")
    run = run_cli("run", *base, "method=probe", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "data stage: reusing" in run.stdout + run.stderr
    assert (run_dir / "train" / "adapter" / "probe.safetensors").is_file()
    exported = run_cli(
        "export", *base, "method=probe", f"serve.calibrator_name={calibrator}", cwd=tmp_path
    )
    assert exported.returncode == 0, exported.stderr[-3000:]
    assert (run_dir / "export" / "adapter" / "probe.safetensors").is_file()

    predictions, pairs = eval_pairs(run_dir, tmp_path / "pairs.jsonl")
    scored = run_cli(
        "score",
        *base,
        "method=probe",
        f"serve.score.input={pairs}",
        f"serve.model_dir={run_dir / 'export'}",  # the exported base weights + probe head
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    scores = [json.loads(line) for line in (run_dir / "score" / "scores.jsonl").open()]
    assert [s["id"] for s in scores] == [p["id"] for p in predictions]
    raw = [s["raw_confidence"] for s in scores]
    assert raw == pytest.approx([p["tuned/ptrue"] for p in predictions], abs=1e-6)
    assert len(set(raw)) > 1  # the probe's head gives each pair its own confidence
    # the tuned probe reads the answer signals beside the hidden state (probe.answer_signals):
    # the probe baseline (the hidden state alone) is another fit, reported beside it
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["methods"]["baseline/probe"]["n"] == 16
    assert metrics["methods"]["baseline/logreg"]["n"] == 16
    # the tuned confidence's per-domain maps could add the 24 train rows scored out of fold;
    # add_train=auto added them only if that lowered the held-out log loss on val's folds
    fit_rows = metrics["per_domain_calibration"]["fit_rows"]
    losses = fit_rows["held_out_log_loss"]
    assert fit_rows["n_train"] == 24 and fit_rows["add_train"] == "auto"
    assert fit_rows["used"] is (losses["val+train"] < losses["val"])
    report = (run_dir / "eval" / "report.md").read_text()
    assert f"held-out log loss on val folds: val {losses['val']:.4f}, val + train" in report
    assert metrics["answer_agreement"] == 1.0  # the probe never touches the answering model


@pytest.mark.parametrize("method", ["alora", "alora_head"])
def test_an_activated_lora_runs_end_to_end_and_its_export_scores_like_eval(
    method: str, tiny_model_dir: Path, tmp_path: Path
):
    """method=alora and alora_head through run (alora_head's head from the recorded signals;
    eval's tuned query pass), export (base + adapter (+ head), unmerged) and score: the
    export's raw confidences are the eval's, the answers the base model's by construction."""
    run_dir = tmp_path / "run"
    base = [*tiny_overrides_for(tiny_model_dir, run_dir), *SMALL_DATA, *TWO_STEP_TRIAL, *EVAL_SMALL]
    base += [f"method={method}", "optim.lr=1e-3"]
    cfg = compose("run", base)
    sizes = {"train": 24, "val": 16, "test": 16}
    write_synthetic_labeled_set(run_dir / "data", load_tokenizer(cfg.model), cfg.prompt, sizes)
    record_labeled_set_signals(run_dir / "data", cfg)
    save_config(cfg, run_dir / "data" / "config.yaml")
    run = run_cli("run", *base, cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "data stage: reusing" in run.stdout + run.stderr
    head = method == "alora_head"
    assert (run_dir / "train" / "adapter" / "probe.safetensors").is_file() == head
    exported = run_cli("export", *base, cwd=tmp_path)
    assert exported.returncode == 0, exported.stderr[-3000:]
    serve = json.loads((run_dir / "export" / "calibtune.json").read_text())
    assert serve["adapter_kind"] == method and serve["adapter_subdir"] == "adapter"
    assert (run_dir / "export" / "adapter" / "probe.safetensors").is_file() == head
    weights = load_file(run_dir / "export" / "model.safetensors")
    assert not [k for k in weights if "lora_" in k or "base_layer" in k]  # the plain base model

    predictions, pairs = eval_pairs(run_dir, tmp_path / "pairs.jsonl")
    scored = run_cli(
        "score",
        *base,
        f"serve.score.input={pairs}",
        f"serve.model_dir={run_dir / 'export'}",
        cwd=tmp_path,
    )
    assert scored.returncode == 0, scored.stderr[-3000:]
    scores = [json.loads(line) for line in (run_dir / "score" / "scores.jsonl").open()]
    raw = [s["raw_confidence"] for s in scores]
    assert raw == pytest.approx([p["tuned/ptrue"] for p in predictions], abs=1e-6)
    assert len(set(raw)) > 1
    metrics = json.loads((run_dir / "eval" / "metrics.json").read_text())
    assert metrics["answer_agreement"] == 1.0  # an activated adapter never touches the answers
    assert metrics["work"]["tuned_query_rows"] == 32  # its confidence needs its own query pass


def test_lodo_trains_each_fold_without_its_domains_and_aggregates(
    tiny_model_dir: Path, tmp_path: Path
):
    run_dir, domains = tmp_path / "lodo", ["arithmetic", "continents", "currencies", "capitals"]
    base = [*tiny_overrides_for(tiny_model_dir, run_dir), *SMALL_DATA, *TWO_STEP_TRIAL, *EVAL_SMALL]
    base.append("method=alora")  # end to end through every fold (real labels: no probe fit)
    include = f"data.include_domains=[{','.join(domains)}]"
    run = run_cli("lodo", *base, include, "lodo.folds=2", cwd=tmp_path)
    assert run.returncode == 0, run.stderr[-3000:]
    assert "2 folds" in run.stdout and "expected about" in run.stdout
    held_out, ids, generated = [], [], 0
    for fold in ("fold0", "fold1"):
        manifest = json.loads((run_dir / fold / "data" / "manifest.json").read_text())
        generated += manifest["work"]["generation_rows"]
        ids += [
            json.loads(line)["id"]
            for split in ("train", "val", "test")
            for line in (run_dir / fold / "data" / f"{split}.jsonl").read_text().splitlines()
        ]
        split_domains = {
            split: {
                json.loads(line)["domain"]
                for line in (run_dir / fold / "data" / f"{split}.jsonl").read_text().splitlines()
            }
            for split in ("train", "val", "test")
        }
        saved = OmegaConf.load(run_dir / fold / "data" / "config.yaml")
        fold_domains = set(saved.data.holdout_domains)
        assert fold_domains and not fold_domains & (split_domains["train"] | split_domains["val"])
        assert split_domains["test"] == fold_domains  # test is all held-out rows
        metrics = json.loads((run_dir / fold / "eval" / "metrics.json").read_text())
        assert set(metrics["per_domain"]) <= fold_domains  # scored on its held-out domains only
        held_out.append(fold_domains)
    assert held_out[0].isdisjoint(held_out[1]) and held_out[0] | held_out[1] == set(domains)
    assert "Runs (2): fold0/eval, fold1/eval" in (run_dir / "aggregate.md").read_text()
    assert len(ids) > len(set(ids))  # the folds share questions ...
    assert generated == len(set(ids))  # ... and each was answered once (the answer pool)
