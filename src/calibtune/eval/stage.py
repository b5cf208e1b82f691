"""The eval stage: calibration of the tuned model against its base, with intervals and baselines.

    calibtune eval eval.data_dir=<labeled set | QA JSONL> eval.adapter=<train dir | adapter dir | null>

1. Load the base model, and the labeled val/test examples (or answer and grade a raw QA file
   with the data stage's code, split by question from the seed).
2. Attach the adapter; base confidences come from the same weights under `disable_adapter()`.
3. Confidences (docs/evaluation.md) on val and test: ptrue (base, tuned), pavg / seqlogp / pmin,
   verbalized; Full-ECE of base and tuned next-token distributions over a temperature grid.
4. Recalibrators fitted on val only, applied to test; per-domain calibrators and the decision
   policy (`eval.production`: fitted on val, scored on test).
5. Metrics on test, tuned-minus-base deltas with paired-bootstrap intervals, per-domain tables,
   selective prediction at `eval.target_risk`, what tuning cost (answer agreement, accuracy).
6. Write metrics.json, calibrators.json, predictions.jsonl, report.md, report.html (rank 0).
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from calibtune.config import check_config
from calibtune.errors import ConfigError, InputError
from calibtune.eval import baselines, confidence, report, scoring
from calibtune.eval.production import (
    choose_train_rows,
    domain_calibration_report,
    fit_and_score_policy,
    fit_domain_calibration,
    read_out_of_fold,
)
from calibtune.eval.recalibrate import (
    CalibrationUnavailable,
    apply_calibrator,
    fit_calibrator,
)
from calibtune.examples import MANIFEST, read_labeled_split, row_group
from calibtune.metrics import FullECE, MetricError
from calibtune.models.confidence import (
    QueryModel,
    attach_adapter,
    confidences,
    encode_query,
    query_tokens_of,
    render_query_prompt,
    shared_suffix,
)
from calibtune.models.loading import (
    find_adapter_dir,
    load_model,
    load_tokenizer,
)
from calibtune.models.probe import check_probe_layer, is_baseline_probe_fit
from calibtune.models.signals import (
    BaseSignals,
    compute_signals,
    concat,
    read_signals,
    signals_key,
    temperature_grid,
)
from calibtune.runtime import is_rank_zero, process_group, provenance, set_seed, share_work

log = logging.getLogger(__name__)
SCHEMA_VERSION = 1


# -- inputs


def resolve_adapter(adapter: str | None) -> Path | None:
    """The adapter directory of `eval.adapter` (a train output dir, an adapter dir), or None."""
    if adapter in (None, "", "null", "none"):
        return None
    return find_adapter_dir(adapter, "eval.adapter")


def split_by_question(rows: list[dict], seed: int, val_fraction: float) -> dict[str, list[dict]]:
    """Deterministic val/test split by entity group (`entity_groups`: rows sharing a group, a
    qid or a question text stay together)."""
    from calibtune.data.stage import entity_groups

    entity_groups(rows)  # sets each row's `group` to its component's name
    splits: dict[str, list[dict]] = {"val": [], "test": []}
    for row in rows:
        key = row_group(row)
        draw = int(hashlib.sha256(f"{seed}:{key}".encode()).hexdigest()[:8], 16) / 0xFFFFFFFF
        splits["val" if draw < val_fraction else "test"].append(row)
    return splits


def check_data_path(data_dir: str) -> Path:
    """The eval data path, failing before any model loads when it is neither input kind."""
    data_path = Path(data_dir)
    if not (data_path / MANIFEST).is_file() and not data_path.is_file():
        raise InputError(
            data_path, None, None, "not a labeled set (no manifest.json) nor a QA JSONL file"
        )
    return data_path


def read_inputs(cfg: DictConfig) -> dict[str, list[dict]] | list[dict]:
    """Before any model loads: the labeled val and test rows, or every (validated) row of a raw
    QA JSONL file, whose errors name file, line and field."""
    data_path = check_data_path(cfg.eval.data_dir)
    if (data_path / MANIFEST).is_file():
        return {split: read_labeled_split(data_path, split) for split in ("val", "test")}
    from calibtune.data.sources import read_qa_jsonl

    return read_qa_jsonl(data_path)


def load_examples(
    cfg: DictConfig, model, tokenizer, inputs, group
) -> tuple[dict[str, list[dict]], BaseSignals | None]:
    """Labeled val and test rows: `read_inputs`' splits, or its raw QA rows answered and graded
    by the base model (chunks shared over the processes of `group`, base signals recorded as in
    the data stage) and split by question; and those signals (None for a labeled set)."""
    data_path = Path(cfg.eval.data_dir)
    signals = None
    if isinstance(inputs, dict):
        splits = inputs
    else:
        from calibtune.data.stage import label_qa_rows_pooled, write_labeled_set

        log.info("answering and grading %s with the base model", data_path)
        part = label_qa_rows_pooled(model, tokenizer, inputs, cfg, group)
        log.info("%d of %d answers from the answer pool", part.work["pooled_rows"], len(inputs))
        signals = part.signals
        splits = split_by_question(part.rows, cfg.seed, cfg.eval.val_fraction)
        if is_rank_zero():  # the graded answers, beside metrics.json: what was graded how
            labeled = [{**row, "split": name} for name, part in splits.items() for row in part]
            write_labeled_set(cfg, Path(cfg.eval.output_dir) / "labeled", labeled, str(data_path))
    test_domains = set(cfg.eval.test_domains or [])
    if test_domains:
        splits["test"] = [r for r in splits["test"] if r.get("domain") in test_domains]
    limit = cfg.eval.max_examples
    splits = {name: rows[:limit] if limit else rows for name, rows in splits.items()}
    for name, rows in splits.items():
        if not rows:
            raise InputError(data_path, None, None, f"the {name} split is empty")
    return splits, signals


# -- confidences


def verbalized_prompts(cfg: DictConfig, tokenizer, rows: list[dict]) -> list[str]:
    """Prompts asking for a 0-100 % confidence in each row's response."""
    prompt_cfg = OmegaConf.merge(
        cfg.prompt, {"query_template": cfg.eval.verbalized.template, "query_style": "restate"}
    )
    return [
        render_query_prompt(tokenizer, prompt_cfg, r["question"], r.get("choices"), r["response"])
        for r in rows
    ]


def row_signals(
    cfg: DictConfig,
    qm: QueryModel,
    tokenizer,
    rows: list[dict],
    recorded: BaseSignals | None,
    group,
) -> tuple[BaseSignals, int]:
    """Base signals of `rows`: the recorded ones, and for rows without any (or when the eval's
    Full-ECE grid or bins differ from the recorded ones) one base pass each, shared over the
    processes of `group`. Returns the signals and the number of rows passed through the model."""
    grid, n_bins = temperature_grid(cfg.eval), int(cfg.eval.n_bins)
    ids = [str(r["id"]) for r in rows]
    usable = recorded is not None and recorded.full_ece_scans(grid, n_bins) is not None
    missing = recorded.missing(ids) if usable else ids
    if not missing:
        return recorded.select(ids), 0
    log.info("base signals: one base pass over %d rows without recorded signals", len(missing))
    missing_ids = set(missing)
    todo = [r for r in rows if str(r["id"]) in missing_ids]
    tokens = query_tokens_of(tokenizer, cfg.prompt)
    world = group.num_processes if group is not None else 1

    def signals_of(part: list[dict]) -> BaseSignals | None:
        progress = bar(cfg, "base signals")
        batch_size = cfg.eval.batch_size
        layer = int(cfg.model.feature_layer)
        return compute_signals(
            qm, tokenizer, part, tokens, batch_size, grid, n_bins, layer, progress
        )

    tasks = {
        k: (lambda part=todo[k::world]: signals_of(part) if part else None) for k in range(world)
    }
    done = share_work(group, tasks)
    parts = [p for p in done.values() if p is not None] + ([recorded] if usable else [])
    return concat(parts).select(ids), len(missing)


def bar(cfg: DictConfig, name: str):
    """A progress wrapper for batch lists (rank 0, eval.progress), or None."""
    if not (bool(cfg.eval.progress) and is_rank_zero()):
        return None
    return lambda batches: tqdm(list(batches), desc=name, unit="batch")


def tuned_confidences(
    cfg: DictConfig, qm: QueryModel, tokenizer, rows: list[dict], split: str, full_ece: bool
) -> dict:
    """The tuned model's query pass over `rows`: tuned/ptrue (the shared confidence passes, as
    train validation and `Scorer`), and with `full_ece` the tuned Full-ECE scans (a LoRA's
    whole-query pass gives its answer-token logits)."""
    tokens = query_tokens_of(tokenizer, cfg.prompt)
    qm.check_queries(tokenizer, shared_suffix(rows))
    queries = [encode_query(tokenizer, row, with_answer=True) for row in rows]
    scans = [(t, FullECE(cfg.eval.n_bins)) for t in temperature_grid(cfg.eval)] if full_ece else []
    two_way, _ = confidence.tuned_pass(
        qm, tokenizer, rows, queries, tokens, cfg.eval.batch_size, scans, bar(cfg, f"{split} tuned")
    )
    return {"tuned/ptrue": confidences(two_way), "full_ece": scans}


def add_verbalized(cfg, qm: QueryModel, tokenizer, rows, confidences: dict) -> dict:
    """Base model's verbalized confidence on the first `verbalized.max_examples` rows."""
    settings = cfg.eval.verbalized
    if not settings.enabled:
        return {"enabled": False}
    limit = min(len(rows), settings.max_examples or len(rows))
    with qm.base_mode():
        values, unparseable = confidence.verbalized_confidences(
            qm.module,
            tokenizer,
            verbalized_prompts(cfg, tokenizer, rows[:limit]),
            cfg.eval.batch_size,
            settings.max_new_tokens,
        )
    confidences["base/verbalized"] = np.concatenate([values, np.full(len(rows) - limit, np.nan)])
    return {"enabled": True, "n_asked": limit, "n_unparseable": unparseable}


def summarize_full_ece(full: dict) -> dict:
    """Full-ECE at temperature 1 and the temperature in the grid that minimises it, per model."""
    summary: dict = {}
    for name, scans in full.items():
        curve = [[t, metric.compute()] for t, metric in scans]
        summary[name] = next(v for t, v in curve if t == 1.0)
        best_t, best_v = min(curve, key=lambda point: (point[1], abs(point[0] - 1.0)))
        summary[f"{name}_best_temperature"] = best_t
        summary[f"{name}_at_best_temperature"] = best_v
        summary[f"{name}_curve"] = curve
        summary["n_positions"] = scans[0][1].positions
    return summary


# -- recalibration


def recalibrate(cfg, val: dict, y_val, test: dict) -> tuple[dict, dict, dict]:
    """Fit each recalibrator on val for each configured method; apply to test.

    Returns recalibrated test confidences, fitted params, and reasons for those not fitted."""
    recalibrated, fitted, unavailable = {}, {}, {}
    for method in cfg.eval.recalibrate_methods:
        if method not in val:
            continue
        present = ~np.isnan(val[method])
        for kind in cfg.eval.recalibrators:
            name = f"{method}+{kind}"
            try:
                params = fit_calibrator(kind, val[method][present], y_val[present], cfg.eval.n_bins)
            except (CalibrationUnavailable, MetricError) as err:
                unavailable[name] = str(err)
                continue
            fitted[name] = params
            raw = test[method]
            recalibrated[name] = np.where(
                np.isnan(raw), np.nan, apply_calibrator(params, np.nan_to_num(raw))
            )
    return recalibrated, fitted, unavailable


# -- trained baselines


def add_trained_baselines(
    train: tuple[list[dict], str | None],
    train_signals: BaseSignals | None,
    splits: dict[str, list[dict]],
    scored: dict[str, dict],
    hidden: dict[str, np.ndarray] | None,
    seed: int,
) -> dict[str, str]:
    """Fit the trained baselines (eval/baselines.py) on the train rows' base signals and add
    their confidences to `scored` (split name -> val or test confidences); `hidden` (split name
    -> base hidden states) enables the probe baseline. Returns reasons for any not fitted."""
    train_rows, reason = train
    if reason is not None:
        return dict.fromkeys(baselines.TRAINED, reason)
    if hidden is not None:
        hidden = {**hidden, "train": train_signals.hidden.double().numpy()}
    rows_and_confidences = {name: (splits[name], scored[name]) for name in ("val", "test")}
    fitted, not_fitted = baselines.trained_baselines(
        train_rows, train_signals.confidences(), rows_and_confidences, seed, hidden
    )
    for name in ("val", "test"):
        scored[name].update(fitted[name])
    return not_fitted


# -- cost of tuning


def tuning_cost(cfg, qm: QueryModel, tokenizer, rows: list[dict]) -> dict:
    """Tuned vs base greedy answers on a seeded sample of test: agreement, and tuned accuracy.

    Both sides are generated here with the same batches and settings (the data stage's
    max_new_tokens and stop strings, greedy), the base side under `disable_adapter()`, so the
    agreement measures the adapter alone; agreement with the data stage's stored responses (other
    batch composition) is reported beside it. A method that cannot change the answers
    (`qm.method.unchanged_answers`: a probe head; an activated LoRA, inactive on the answer
    prompt) generates nothing: agreement 1 by construction, said so under `by_construction`."""
    from calibtune.data.generation import generate_answers
    from calibtune.data.grading import grade
    from calibtune.data.stage import generation_kwargs

    if qm.method.unchanged_answers is not None:
        return {
            "n": 0,
            "answer_agreement": 1.0,
            "by_construction": qm.method.unchanged_answers,
            "base_accuracy": float(np.mean([float(r["correct"]) for r in rows])),
        }
    limit = min(len(rows), cfg.eval.agreement_max_examples or len(rows))
    picked = np.sort(np.random.default_rng(int(cfg.seed)).permutation(len(rows))[:limit])
    rows = [rows[i] for i in picked]
    settings = {**generation_kwargs(cfg.data), "num_samples": 1, "temperature": 0.0}
    settings["batch_size"] = cfg.eval.batch_size
    prompts = [r["prompt"] for r in rows]
    model = qm.module
    tuned = [samples[0] for samples in generate_answers(model, tokenizer, prompts, **settings)]
    with qm.base_mode():
        base = [s[0] for s in generate_answers(model, tokenizer, prompts, **settings)]
    same = [normalize(t) == normalize(b) for t, b in zip(tuned, base, strict=True)]
    stored = [normalize(t) == normalize(r["response"]) for t, r in zip(tuned, rows, strict=True)]
    base_stored = [
        normalize(b) == normalize(r["response"]) for b, r in zip(base, rows, strict=True)
    ]
    graded = []
    for answer, row in zip(tuned, rows, strict=True):
        try:
            graded.append(
                float(
                    grade(
                        answer, row["answers"], row.get("choices"), row["grader"], row["question"]
                    )
                )
            )
        except (ConfigError, KeyError):
            continue
    base_accuracy = float(np.mean([float(r["correct"]) for r in rows]))
    changed = [i for i, agree in enumerate(same) if not agree]
    return {
        "n": limit,
        "answer_agreement": float(np.mean(same)),
        "agreement_with_stored_responses": float(np.mean(stored)),
        "base_regenerated_vs_stored": float(np.mean(base_stored)),
        "tuned_accuracy": float(np.mean(graded)) if len(graded) == limit else None,
        "base_accuracy": base_accuracy,
        "examples": [
            {"id": rows[i]["id"], "base": base[i], "tuned": tuned[i]} for i in changed[:5]
        ],
    }


def normalize(text: str) -> str:
    """Whitespace- and case-insensitive form of an answer, for agreement."""
    return " ".join(text.split()).casefold()


# -- the stage


def model_passes_on_ranks(group, cfg, qm, tokenizer, splits: dict) -> tuple:
    """The model passes of the stage beyond the base signals: the tuned query pass over val and
    test (a method with `tuned_query_pass`: LoRA, aLoRA), verbalized confidence and the cost of
    tuning (a `tuned` method), as four tasks
    spread over the launched processes (task k on rank k % N) and returned on every rank. Each
    task runs as in one process; more than four processes leave the rest idle."""
    query_pass = qm.method.tuned_query_pass

    def verbalized_task() -> tuple[dict, dict]:
        extra: dict = {}
        return add_verbalized(cfg, qm, tokenizer, splits["test"], extra), extra

    tasks = {
        "val": lambda: (
            tuned_confidences(cfg, qm, tokenizer, splits["val"], "val", False)
            if query_pass
            else None
        ),
        "test": lambda: (
            tuned_confidences(cfg, qm, tokenizer, splits["test"], "test", True)
            if query_pass
            else None
        ),
        "verbalized": verbalized_task,
        "cost": lambda: (
            tuning_cost(cfg, qm, tokenizer, splits["test"]) if qm.method.tuned else None
        ),
    }
    done = share_work(group, tasks)
    verbalized, extra = done["verbalized"]
    return done["val"], done["test"], verbalized, extra, done["cost"]


def base_and_tuned(
    cfg, qm: QueryModel, signals: dict[str, BaseSignals], model_out: dict
) -> tuple[dict, dict, dict, dict]:
    """Val and test confidences (base from the signals; tuned from the method's query pass in
    `model_out`, or read off the recorded signals: a probe's head on the hidden states), the
    Full-ECE scans by model, and what the report says about tuned Full-ECE."""
    scored = {name: signals[name].confidences() for name in ("val", "test")}
    for name in ("val", "test"):
        tuned = tuned_ptrue(qm, signals[name], model_out[name])
        if tuned is not None:
            scored[name]["tuned/ptrue"] = tuned
    grid, n_bins = temperature_grid(cfg.eval), int(cfg.eval.n_bins)
    full = {"base": signals["test"].full_ece_scans(grid, n_bins)}
    note = {}
    if qm.method.base_answer_tokens is not None:
        full["tuned"], note["tuned_is_base"] = full["base"], qm.method.base_answer_tokens
    elif qm.method.tuned_full_ece:
        full["tuned"] = model_out["test"]["full_ece"]
    return scored["val"], scored["test"], full, note


def tuned_ptrue(qm: QueryModel, signals: BaseSignals, out: dict | None) -> np.ndarray | None:
    """One split's tuned confidences: the method's query pass (`out`), or its reading of the
    recorded base signals (a probe); None for the base model."""
    if out is not None:
        return out["tuned/ptrue"]
    two_way = qm.method.confidences_from_signals(qm, signals.hidden, signals.stats)
    return None if two_way is None else confidences(two_way)


def run_eval_stage(cfg: DictConfig) -> Path:
    """Evaluate base vs tuned on cfg.eval.data_dir; write the report to cfg.eval.output_dir."""
    eval_cfg = cfg.eval
    output_dir = Path(eval_cfg.output_dir)
    set_seed(cfg.seed)
    check_config(cfg)
    adapter_path = resolve_adapter(eval_cfg.adapter)
    check_probe_layer(adapter_path, int(cfg.model.feature_layer))
    inputs = read_inputs(cfg)
    oof = read_out_of_fold(cfg, adapter_path, inputs)
    train = baselines.read_train_rows(eval_cfg.data_dir, eval_cfg.baseline_train_max, cfg.seed)
    recorded = None
    if isinstance(inputs, dict):  # a labeled set: its recorded signals, refused if stale
        recorded = read_signals(eval_cfg.data_dir, signals_key(cfg))
    tokenizer = load_tokenizer(cfg.model)
    group = process_group(str(cfg.model.device))  # several processes: see model_passes_on_ranks
    model = load_model(cfg.model, device=group.device if group is not None else None)
    splits, answered = load_examples(cfg, model, tokenizer, inputs, group)
    log.info("adapter %s", adapter_path)
    qm = attach_adapter(model, adapter_path)
    tuned = adapter_path is not None
    y_val = np.array([float(r["correct"]) for r in splits["val"]])
    y_test = np.array([float(r["correct"]) for r in splits["test"]])

    log.info("confidences on val (%d) and test (%d)", len(y_val), len(y_test))
    rows = {**splits, **({"train": train[0]} if train[1] is None else {})}
    signals, computed = {}, {}
    for name, part in rows.items():
        signals[name], computed[name] = row_signals(
            cfg, qm, tokenizer, part, recorded or answered, group
        )
    model_out = {}
    model_out["val"], model_out["test"], verbalized, extra, cost = model_passes_on_ranks(
        group, cfg, qm, tokenizer, splits
    )
    val, test, full_scans, full_note = base_and_tuned(cfg, qm, signals, model_out)
    test.update(extra)
    full_ece = {**summarize_full_ece(full_scans), **full_note}

    probe_is_tuned = adapter_path is not None and is_baseline_probe_fit(adapter_path)
    probe = bool(eval_cfg.baseline_probe) and not probe_is_tuned
    hidden = {n: signals[n].hidden.double().numpy() for n in ("val", "test")} if probe else None
    baselines_not_fitted = add_trained_baselines(
        train, signals.get("train"), splits, {"val": val, "test": test}, hidden, cfg.seed
    )
    if probe_is_tuned and train[1] is None:
        baselines_not_fitted[baselines.PROBE] = (
            "the tuned model is this probe (method=probe, probe.fit=logistic, "
            "probe.strength_folds=entity: the same fit)"
        )
    work = {
        "base_signals": "recorded by the data stage" if recorded is not None else "computed here",
        "base_signal_rows_computed": computed,
        "tuned_query_rows": sum(len(splits[n]) for n in ("val", "test"))
        if qm.method.tuned_query_pass
        else 0,
    }
    recalibrated, calibrators, not_fitted = recalibrate(cfg, val, y_val, test)
    test.update(recalibrated)
    not_fitted.update(baselines_not_fitted)
    val_domains, domains = baselines.domains_of(splits["val"]), baselines.domains_of(splits["test"])
    val_groups = [row_group(r) for r in splits["val"]]
    extra, fit_rows = choose_train_rows(cfg, val, y_val, val_domains, val_groups, oof)
    domain_fitted, domain_not_fitted = fit_domain_calibration(
        cfg, val, y_val, val_domains, val_groups, extra
    )
    calibrators.update(domain_fitted)
    not_fitted.update(domain_not_fitted)
    for name, params in domain_fitted.items():
        method = name.removesuffix("+per_domain")
        test[name] = apply_calibrator(params, test[method], domains)
        val[name] = apply_calibrator(params, val[method], val_domains)
    decision_policy, policy_block = fit_and_score_policy(
        cfg, domain_fitted, val, y_val, val_domains, val_groups, test, y_test, domains, extra
    )

    log.info("scoring %d methods", len(test))
    methods = {name: scoring.score_method(c, y_test, eval_cfg.n_bins) for name, c in test.items()}
    for name, reason in not_fitted.items():
        methods[name] = {"n": 0, "n/a": {"all": reason}}
    min_per_class = eval_cfg.within_min_per_class
    within = scoring.within_domain(domains, y_test, test, eval_cfg.n_bins, min_per_class)
    scoring.add_within(methods, within)
    settings = {
        "n_bins": eval_cfg.n_bins,
        "n_boot": eval_cfg.n_boot,
        "seed": cfg.seed,
        "groups": [row_group(r) for r in splits["test"]],
        "domains": domains,
        "min_per_class": min_per_class,
    }
    if tuned:
        deltas = scoring.paired_deltas(test["base/ptrue"], test["tuned/ptrue"], y_test, **settings)
    else:
        deltas = scoring.no_deltas("no adapter (eval.adapter=null): base model only")
    versus_best = scoring.deltas_vs_best_baseline(val, y_val, test, y_test, settings)
    domain_methods = {m: test[m] for m in ("base/ptrue", "tuned/ptrue") if m in test}
    per_domain = scoring.per_domain(domains, y_test, domain_methods, eval_cfg.n_bins)
    selective = {}
    for method in domain_methods:
        threshold = scoring.threshold_for_risk(val[method], y_val, eval_cfg.target_risk)
        selective[method] = scoring.selective_at_threshold(test[method], y_test, threshold)

    result = {
        "schema_version": SCHEMA_VERSION,
        "n_test": int(len(y_test)),
        "n_val": int(len(y_val)),
        "accuracy": float(np.mean(y_test)),
        "model": str(cfg.model.name_or_path),
        "adapter": str(adapter_path) if adapter_path else None,
        "seed": int(cfg.seed),
        "n_bins": int(eval_cfg.n_bins),
        "n_boot": int(eval_cfg.n_boot),
        "methods": methods,
        "deltas": deltas,
        "deltas_vs_best_baseline": versus_best,
        "full_ece": full_ece,
        "answer_agreement": cost["answer_agreement"] if cost else None,
        "tuning_cost": cost,
        "verbalized": verbalized,
        "per_domain": per_domain,
        "within_domain": within,
        "worst_domain_ece": {m: scoring.worst_domain(per_domain, m) for m in domain_methods},
        "selective": {"target_risk": float(eval_cfg.target_risk), **selective},
        "risk_coverage": {m: scoring.risk_coverage(test[m], y_test) for m in domain_methods},
        "calibrators_not_fitted": not_fitted,
        "per_domain_calibration": domain_calibration_report(
            cfg,
            domain_fitted,
            test,
            y_test,
            domains,
            [row_group(r) for r in splits["test"]],
            fit_rows,
        ),
        "policy": policy_block,
        "work": work,
        **provenance(),
    }
    if is_rank_zero():
        report.write_outputs(
            cfg,
            output_dir,
            result,
            calibrators,
            {"test": (splits["test"], test), "val": (splits["val"], val)},
            decision_policy,
        )
    log.info("eval report: %s", output_dir / "report.html")
    return output_dir
