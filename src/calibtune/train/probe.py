"""`method=probe`: a small head on the frozen model's hidden state (model.feature_layer) at the
query's last token, trained with the same CE on `correct` (no KL needed: the model itself never
changes).

Saved as `adapter/probe.safetensors` + `adapter/probe_config.json` (the head is
`calibtune.models.probe`); validation and every later stage score it with
`calibtune.models.methods.PROBE` (the head on `query_features`)."""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path

import numpy as np
import torch
from omegaconf import DictConfig
from transformers import get_scheduler

from calibtune.config import save_config
from calibtune.errors import ConfigError, InputError
from calibtune.examples import row_group, split_path
from calibtune.io import atomic_dir, write_json_atomic, write_jsonl_atomic
from calibtune.models.confidence import query_tokens_of
from calibtune.models.loading import load_tokenizer, model_fingerprint
from calibtune.models.probe import (
    OUT_OF_FOLD,
    PROBE_WEIGHTS,
    ProbeHead,
    fold_temperature,
    out_of_fold_probabilities,
    tempered,
    write_probe_files,
)
from calibtune.runtime import set_seed
from calibtune.tracking import Tracker
from calibtune.train import checkpoint as ckpt
from calibtune.train import common, preemption
from calibtune.train import strategy as dist
from calibtune.train.checkpoint import verify_saved_tensors
from calibtune.train.data import plan_batches
from calibtune.train.features import (
    answer_signals_of,
    fit_probe,
    folds_keep_both_grades,
    resolve_strength_folds,
    split_features,
    strength_groups,
)
from calibtune.train.loss import soft_binary_cross_entropy
from calibtune.train.steps import validation_metrics

log = logging.getLogger(__name__)


def two_way_logits(logit: torch.Tensor) -> torch.Tensor:
    """[no, yes] logits [N, 2] from the probe's logit of correct [N] (as ProbeHead.two_way,
    for a head called through its DDP wrapper, whose forward gives the logit)."""
    return torch.stack([torch.zeros_like(logit), logit], dim=-1)


def save_probe(head: ProbeHead, out_dir: Path, extra: dict) -> None:
    """probe.safetensors + probe_config.json into out_dir (temp dir + rename, verified)."""
    with atomic_dir(out_dir) as tmp:
        verify_saved_tensors(tmp / PROBE_WEIGHTS, write_probe_files(head, tmp, extra))


def train_probe(cfg: DictConfig) -> Path:
    """Features from the frozen model once (sharded over ranks), then the head: fitted by L2
    logistic regression (probe.fit=logistic; with probe.strength_folds=entity the eval's
    baseline/probe) or trained by AdamW (probe.fit=adamw); saved as adapter/ with a manifest."""
    tc = cfg.train
    accelerator = dist.make_accelerator(cfg)
    if dist.use_deepspeed() or str(tc.strategy) == "fsdp2":
        raise ConfigError("method=probe trains a small head: use DDP (train.strategy=auto)")
    accelerator.gradient_accumulation_steps = 1
    output_dir = common.shared_output_dir(accelerator, tc.output_dir)
    train_rows, val_rows = common.read_training_data(cfg)
    batched = cfg.probe.fit == "adamw"  # the logistic fit takes no batches
    common.check_train_config(cfg, len(train_rows), accelerator.num_processes, batched)
    folds, temperature_folds = "entity", "none"  # probe.fit=adamw: no strength, no temperature
    if cfg.probe.fit == "logistic":
        folds = resolve_strength_folds(train_rows, cfg.probe.strength_folds)
        check_fittable(train_rows, Path(cfg.train.data_dir), folds)
        log.info("probe strength: chosen on %s folds of train", folds)
        temperature_folds = resolve_temperature_folds(cfg, folds)
        if temperature_folds == "domain":
            check_fittable(train_rows, Path(cfg.train.data_dir), "domain", "temperature_folds")
    tokenizer = load_tokenizer(cfg.model)
    query_tokens_of(tokenizer, cfg.prompt)
    set_seed(int(cfg.seed))
    (train_xy, val_xy), computed = split_features(
        cfg, accelerator, tokenizer, [train_rows, val_rows]
    )
    work = {"whole_query_rows": computed}
    if cfg.probe.fit == "logistic":
        both = (folds, temperature_folds)
        fields = fit_logistic(cfg, accelerator, output_dir, train_xy, val_xy, train_rows, both)
    else:
        with preemption.stop_on_signals():  # SIGUSR1/SIGTERM: checkpoint at the next step, exit 75
            fields = train_adamw(cfg, accelerator, output_dir, train_xy, val_xy)
    if accelerator.is_main_process:
        manifest = {"stage": "train", "method": "probe", "seed": int(cfg.seed), **fields}
        manifest["world_size"] = accelerator.num_processes
        manifest["work"] = work
        write_json_atomic(
            output_dir / "manifest.json", {**manifest, **_shared_manifest_fields(cfg)}
        )
    accelerator.wait_for_everyone()
    return output_dir


def check_fittable(
    train_rows: list[dict], data_dir: Path, folds: str, option: str = "strength_folds"
) -> None:
    """Before any model pass: the logistic probe needs right and wrong answers from at least two
    entity groups, or with `domain` folds two domains, and both grades in every fold's fit rows
    (its strength, and with probe.temperature_folds its temperature, are chosen on folds of
    them). `folds` is the resolved `probe.<option>`."""
    grades = {float(r["correct"]) >= 0.5 for r in train_rows}
    groups = strength_groups(train_rows, folds)
    kind = "domain" if folds == "domain" else "entity group"
    if len(grades) == 2 and len(set(groups)) >= 2 and folds_keep_both_grades(train_rows, groups):
        return
    raise InputError(
        split_path(data_dir, "train"),
        None,
        "domain" if folds == "domain" and len(grades) == 2 else "correct",
        f"{len(grades)} grade(s) over {len(set(groups))} {kind}(s); the linear probe "
        f"(probe.fit=logistic, probe.{option}={folds}) needs right and wrong answers "
        f"from at least two {kind}s, in every fold's fit rows (more examples, "
        f"probe.{option}=entity, or method=alora)",
    )


def fit_logistic(
    cfg,
    accelerator,
    output_dir: Path,
    train_xy,
    val_xy,
    train_rows: list[dict],
    folds: tuple[str, str],
) -> dict:
    """probe.fit=logistic: the linear probe of calibtune.models.probe on the train features,
    its strength chosen on the first of `folds` (resolved probe.strength_folds) of train (rank
    0; seconds), its logit divided by the temperature `out_of_fold_level` fits on the second
    (resolved probe.temperature_folds), scored on val, saved with the train rows' out-of-fold
    confidences; the manifest fields."""
    if not accelerator.is_main_process:
        return {}
    (folds, temperature_folds), (x_train, y_train), (x_val, y_val) = folds, train_xy, val_xy
    groups = strength_groups(train_rows, folds)
    layer, signals = int(cfg.model.feature_layer), answer_signals_of(cfg)
    seed = int(cfg.seed)
    head, strength = fit_probe((x_train, y_train), groups, seed, layer, signals)
    oof, temperature = out_of_fold_level(train_xy, train_rows, seed, strength, temperature_folds)
    head.temper(temperature)
    with torch.no_grad():
        scores = validation_metrics(head.two_way(x_val), y_val)
    tracker = Tracker(output_dir, cfg.logger, cfg)
    save_config(cfg, output_dir / "config.yaml")
    tracker.log({f"val/{k}": v for k, v in scores.items()}, step=0)
    tracker.finish()
    save_probe(
        head,
        output_dir / "adapter",
        {
            "feature": "last_hidden_state",
            "fit": "logistic",
            "strength_folds": folds,
            "temperature_folds": temperature_folds,
            "temperature": temperature,
        },
    )
    write_out_of_fold(output_dir, train_rows, oof)
    metric = cfg.train.best_metric
    return {
        "steps": 0,
        "fit": {
            "kind": "logistic",
            "inverse_l2_strength": strength,
            "strength_folds": folds,
            "temperature_folds": temperature_folds,
            "temperature": temperature,
            "train_rows": len(y_train),
        },
        "best": {"metric": metric, "step": 0, "value": scores[metric], "val_metrics": scores},
    }


def resolve_temperature_folds(cfg: DictConfig, strength_folds: str) -> str:
    """`probe.temperature_folds` as set, or for `auto` the folds the strength was chosen on
    (`strength_folds`, resolved)."""
    setting = str(cfg.probe.temperature_folds)
    return strength_folds if setting == "auto" else setting


def out_of_fold_level(
    train_xy, rows: list[dict], seed: int, strength: float, setting: str
) -> tuple[np.ndarray, float]:
    """Each train row's confidence from the probe refitted at the chosen `strength` without its
    entity-group fold (the head's kind and level on rows it never saw), and the temperature the
    head's logit is divided by (resolved `probe.temperature_folds`, `setting`): 1 for `none`,
    else the one that fits best the out-of-fold confidences of probes refitted at `strength`
    without each fold of `entity` groups (rows like train's: the same pass) or of whole
    `domain`s (domains not trained on). The confidences come tempered."""
    features, labels = train_xy[0].double().numpy(), (train_xy[1].numpy() >= 0.5).astype(int)
    oof = out_of_fold_probabilities(
        features, labels, strength_groups(rows, "entity"), seed, strength
    )
    if setting == "none":
        return oof, 1.0
    held_out = oof
    if setting == "domain":
        groups = strength_groups(rows, setting)
        held_out = out_of_fold_probabilities(features, labels, groups, seed, strength)
    temperature = fold_temperature(held_out, labels)
    if temperature is None:
        log.warning(
            "probe temperature: its out-of-fold confidences on %s folds of train rank "
            "no better than chance; the head keeps its fitted level",
            setting,
        )
        return oof, 1.0
    log.info("probe temperature %.3f (out of %s folds of train)", temperature, setting)
    return tempered(oof, temperature), temperature


def write_out_of_fold(output_dir: Path, rows: list[dict], confidences: np.ndarray) -> None:
    """adapter/oof_confidences.jsonl: each train row's out-of-fold confidence (id, domain, group,
    correct, confidence), which the eval's per-domain maps may add to val
    (eval.domain_calibration.add_train)."""
    oof = [
        {
            "id": row["id"],
            "domain": row.get("domain"),
            "group": row_group(row),
            "correct": float(row["correct"]),
            "confidence": float(p),
        }
        for row, p in zip(rows, confidences, strict=True)
    ]
    write_jsonl_atomic(output_dir / "adapter" / OUT_OF_FOLD, oof)


def train_adamw(cfg, accelerator, output_dir: Path, train_xy, val_xy) -> dict:
    """probe.fit=adamw: AdamW (optim.lr, betas, eps, weight_decay) at a constant learning rate on
    the head with each rank taking its share of every global batch (DDP); checkpoints, resume
    and stop signals (checkpoint, exit 75) as for LoRA; the best head by `train.best_metric` on
    val is saved as adapter/. Returns the manifest fields."""
    tc = cfg.train
    strategy = dist.Strategy("ddp", accumulation_steps=1)
    rank0, world = accelerator.is_main_process, accelerator.num_processes
    (x_train, y_train), (x_val, y_val) = train_xy, val_xy
    hidden, dropout, layer = (
        int(cfg.probe.hidden),
        float(cfg.probe.dropout),
        cfg.model.feature_layer,
    )
    head = ProbeHead(x_train.shape[1], hidden, dropout, int(layer), answer_signals_of(cfg))
    resume_from = ckpt.find_resume_checkpoint(cfg, output_dir)
    snapshot = ckpt.load_checkpoint(resume_from) if resume_from is not None else None
    if snapshot is not None:
        dist.load_trainable_state(head, snapshot.trainable)
    optimizer = common.adamw(cfg, head)
    scheduler = get_scheduler("constant", optimizer)  # optim.scheduler/warmup: refused if set
    model, optimizer = accelerator.prepare(head.to(accelerator.device), optimizer)
    state = ckpt.TrainState()
    if snapshot is not None:
        state = common.restore_snapshot(accelerator, strategy, head, optimizer, scheduler, snapshot)
    tracker = Tracker(output_dir if rank0 else None, cfg.logger if rank0 else None, cfg)
    if rank0:
        save_config(cfg, output_dir / "config.yaml")
        if snapshot is not None:
            tracker.drop_after(state.step)

    def save_checkpoint() -> None:
        snapshot = common.gather_snapshot(accelerator, strategy, head, optimizer, scheduler, state)
        if rank0:
            ckpt.save_checkpoint(output_dir, snapshot, int(tc.keep_last))
        accelerator.wait_for_everyone()

    batch_size, local_batch = int(tc.batch_size), int(tc.batch_size) // world
    steps = common.total_steps(cfg, len(y_train) // batch_size)
    x_train, y_train = x_train.to(accelerator.device), y_train.to(accelerator.device)
    while state.step < steps:
        batches = plan_batches(
            [0] * len(y_train), batch_size, common.epoch_seed(int(cfg.seed), state.epoch), False
        )
        for batch_index in range(state.batch_in_epoch, len(batches)):
            mine = batches[batch_index][accelerator.process_index :: world]
            model.train()
            logits = two_way_logits(model(x_train[mine]))  # through DDP: gradients averaged
            loss = soft_binary_cross_entropy(logits, y_train[mine]).sum() / local_batch
            accelerator.backward(loss)
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
            state.step, state.batch_in_epoch = state.step + 1, batch_index + 1
            if state.step % int(tc.log_every) == 0:
                mean = accelerator.reduce(loss.detach(), reduction="mean")
                tracker.log({"train/loss": float(mean)}, step=state.step)
            if state.step == steps or (tc.eval_every and state.step % int(tc.eval_every) == 0):
                head.eval()
                with torch.no_grad():
                    scores = validation_metrics(head.two_way(x_val.to(accelerator.device)), y_val)
                tracker.log({f"val/{k}": v for k, v in scores.items()}, step=state.step)
                if common.is_better(tc.best_metric, scores[tc.best_metric], state.best_value):
                    state.best_step, state.best_value = state.step, scores[tc.best_metric]
                    state.best_metrics = scores
                    if rank0:
                        save_probe(head, output_dir / "adapter", {"feature": "last_hidden_state"})
            common.checkpoint_or_stop(accelerator, tc, state.step, steps, save_checkpoint)
            if state.step >= steps:
                break
        else:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    if rank0:
        tracker.finish()
    return {
        "steps": steps,
        "best": {
            "metric": tc.best_metric,
            "step": state.best_step,
            "value": state.best_value,
            "val_metrics": state.best_metrics,
        },
        "final": asdict(state),
    }


def _shared_manifest_fields(cfg: DictConfig) -> dict:
    """Dataset link, model fingerprint, versions and commit, as in the LoRA manifest."""
    from calibtune.examples import MANIFEST
    from calibtune.io import sha256_file
    from calibtune.runtime import provenance

    dataset_manifest = Path(cfg.train.data_dir, MANIFEST).resolve()
    return {
        "dataset": {"manifest": str(dataset_manifest), "sha256": sha256_file(dataset_manifest)},
        "model": model_fingerprint(cfg.model),
        **provenance(),
        "adapter": "adapter",
    }
