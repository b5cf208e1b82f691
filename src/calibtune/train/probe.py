"""`method=probe`: a small head on the frozen model's last hidden state at the query's last
token, trained with the same CE on `correct` (no KL needed: the model itself never changes).

Saved as `adapter/probe.safetensors` + `adapter/probe_config.json` (the head is
`calibtune.models.probe`); validation and every later stage score it with
`calibtune.models.confidence` (the head on `query_features`)."""

from __future__ import annotations

import logging
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import save_file

from calibtune.config import save_config
from calibtune.io import atomic_dir, write_json_atomic
from calibtune.models.confidence import query_features, query_tokens_of
from calibtune.models.loading import load_model, load_tokenizer
from calibtune.models.probe import PROBE_CONFIG, PROBE_WEIGHTS, ProbeHead
from calibtune.runtime import is_rank_zero, set_seed
from calibtune.tracking import Tracker
from calibtune.train.checkpoint import TrainState, verify_saved_tensors
from calibtune.train.data import tokenize_examples
from calibtune.train.loss import soft_binary_cross_entropy
from calibtune.train.steps import validation_metrics

log = logging.getLogger(__name__)


def save_probe(head: ProbeHead, out_dir: Path, extra: dict) -> None:
    """probe.safetensors + probe_config.json into out_dir (temp dir + rename, verified)."""
    with atomic_dir(out_dir) as tmp:
        state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
        save_file(state, tmp / PROBE_WEIGHTS)
        verify_saved_tensors(tmp / PROBE_WEIGHTS, state)
        config = {"type": "probe", "in_features": head.in_features, "hidden": head.hidden, **extra}
        write_json_atomic(tmp / PROBE_CONFIG, config)


def train_probe(cfg: DictConfig) -> Path:
    """Features from the frozen model once, then epochs of AdamW on the head; best head by
    `train.best_metric` on val is saved as adapter/."""
    from calibtune.train.recipe import check_train_config, is_better, read_training_data

    tc = cfg.train
    output_dir = Path(tc.output_dir).resolve()
    train_rows, val_rows = read_training_data(cfg)
    check_train_config(cfg, len(train_rows), 1)
    tokenizer = load_tokenizer(cfg.model)
    query_tokens_of(tokenizer, cfg.prompt)
    set_seed(int(cfg.seed))
    model = load_model(cfg.model).eval()
    pad_id = tokenizer.pad_token_id

    def features(rows):
        examples = tokenize_examples(tokenizer, rows, with_answers=False)
        return query_features(model, examples, pad_id, int(tc.eval_batch_size)), torch.tensor(
            [e.correct for e in examples]
        )

    x_train, y_train = features(train_rows)
    x_val, y_val = features(val_rows)
    head = ProbeHead(x_train.shape[1], int(cfg.probe.hidden), float(cfg.probe.dropout))
    optimizer = torch.optim.AdamW(
        head.parameters(), lr=float(cfg.optim.lr), weight_decay=float(cfg.optim.weight_decay)
    )
    tracker = Tracker(output_dir if is_rank_zero() else None, cfg.logger, cfg)
    if is_rank_zero():
        save_config(cfg, output_dir / "config.yaml")
    state = TrainState()
    generator = torch.Generator().manual_seed(int(cfg.seed))
    steps_per_epoch = len(train_rows) // int(tc.batch_size)
    steps = int(tc.epochs) * steps_per_epoch
    if tc.max_steps:
        steps = min(steps, int(tc.max_steps))
    while state.step < steps:
        order = torch.randperm(len(train_rows), generator=generator)
        for b in range(steps_per_epoch):
            idx = order[b * int(tc.batch_size) : (b + 1) * int(tc.batch_size)]
            head.train()
            loss = soft_binary_cross_entropy(head.two_way(x_train[idx]), y_train[idx]).mean()
            loss.backward()
            optimizer.step()
            optimizer.zero_grad(set_to_none=True)
            state.step += 1
            if state.step % int(tc.log_every) == 0:
                tracker.log({"train/loss": float(loss)}, step=state.step)
            if state.step == steps or (tc.eval_every and state.step % int(tc.eval_every) == 0):
                head.eval()
                with torch.no_grad():
                    scores = validation_metrics(head.two_way(x_val), y_val)
                tracker.log({f"val/{k}": v for k, v in scores.items()}, step=state.step)
                if is_better(tc.best_metric, scores[tc.best_metric], state.best_value):
                    state.best_step, state.best_value = state.step, scores[tc.best_metric]
                    state.best_metrics = scores
                    if is_rank_zero():
                        save_probe(head, output_dir / "adapter", {"feature": "last_hidden_state"})
            if state.step >= steps:
                break
        state.epoch += 1
    if is_rank_zero():
        write_json_atomic(
            output_dir / "manifest.json",
            {
                "stage": "train",
                "method": "probe",
                "seed": int(cfg.seed),
                "steps": steps,
                "best": {
                    "metric": tc.best_metric,
                    "step": state.best_step,
                    "value": state.best_value,
                    "val_metrics": state.best_metrics,
                },
                **_shared_manifest_fields(cfg),
            },
        )
        tracker.finish()
    return output_dir


def _shared_manifest_fields(cfg: DictConfig) -> dict:
    """Dataset link, model fingerprint, versions and commit, as in the LoRA manifest."""
    from calibtune.examples import MANIFEST
    from calibtune.io import sha256_file
    from calibtune.models.loading import model_fingerprint
    from calibtune.runtime import provenance

    dataset_manifest = Path(cfg.train.data_dir, MANIFEST).resolve()
    return {
        "dataset": {"manifest": str(dataset_manifest), "sha256": sha256_file(dataset_manifest)},
        "model": model_fingerprint(cfg.model),
        **provenance(),
        "adapter": "adapter",
    }
