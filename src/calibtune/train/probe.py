"""`method=probe`: a small head on the frozen model's last hidden state at the query's last
token, trained with the same CE on `correct` (no KL needed: the model itself never changes).

Saved as `adapter/probe.safetensors` + `adapter/probe_config.json`; `load_probe(dir)` and
`probe_features(...)` give the eval stage the tuned confidence `sigmoid(head(features))`."""

from __future__ import annotations

import json
import logging
import shutil
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig
from safetensors.torch import load_file, save_file

from calibtune.config import save_config
from calibtune.errors import CalibtuneError
from calibtune.io import write_json_atomic
from calibtune.models.encoding import pad_sequences
from calibtune.models.loading import load_model, load_tokenizer
from calibtune.models.prompts import find_query_tokens
from calibtune.runtime import is_rank_zero, set_seed
from calibtune.tracking import Tracker
from calibtune.train.checkpoint import TrainState, replace_dir, verify_saved_tensors
from calibtune.train.data import tokenize_examples
from calibtune.train.loss import soft_binary_cross_entropy
from calibtune.train.steps import validation_metrics

log = logging.getLogger(__name__)
PROBE_WEIGHTS = "probe.safetensors"
PROBE_CONFIG = "probe_config.json"


class ProbeHead(torch.nn.Module):
    """Linear (hidden=0) or one-hidden-layer head: features [N, H] -> logit of correct [N]."""

    def __init__(self, in_features: int, hidden: int = 0, dropout: float = 0.0):
        super().__init__()
        self.in_features, self.hidden = in_features, hidden
        if hidden > 0:
            self.net = torch.nn.Sequential(
                torch.nn.Dropout(dropout),
                torch.nn.Linear(in_features, hidden),
                torch.nn.GELU(),
                torch.nn.Linear(hidden, 1),
            )
        else:
            self.net = torch.nn.Sequential(
                torch.nn.Dropout(dropout), torch.nn.Linear(in_features, 1)
            )

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logit that the proposed answer is correct."""
        return self.net(features.float()).squeeze(-1)

    def two_way(self, features: torch.Tensor) -> torch.Tensor:
        """[no, yes] logits, so the query loss and metrics apply unchanged."""
        logit = self(features)
        return torch.stack([torch.zeros_like(logit), logit], dim=-1)


@torch.no_grad()
def probe_features(
    model, query_ids: list[list[int]], pad_id: int, batch_size: int, device
) -> torch.Tensor:
    """Last-layer hidden state at each query's last token, [N, H] (float32, on CPU)."""
    feats = torch.empty(len(query_ids), model.config.hidden_size)
    order = sorted(range(len(query_ids)), key=lambda i: -len(query_ids[i]))
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = pad_sequences([query_ids[i] for i in chunk], pad_id, side="left")
        out = model(
            **{k: v.to(device) for k, v in batch.items()},
            output_hidden_states=True,
            logits_to_keep=1,
            use_cache=False,
        )
        feats[chunk] = out.hidden_states[-1][:, -1].float().cpu()
    return feats


def save_probe(head: ProbeHead, out_dir: Path, extra: dict) -> None:
    """probe.safetensors + probe_config.json into out_dir (temp dir + rename, verified)."""
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.", dir=out_dir.parent))
    try:
        state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
        save_file(state, tmp / PROBE_WEIGHTS)
        verify_saved_tensors(tmp / PROBE_WEIGHTS, state)
        config = {"type": "probe", "in_features": head.in_features, "hidden": head.hidden, **extra}
        write_json_atomic(tmp / PROBE_CONFIG, config)
        replace_dir(tmp, out_dir)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_probe(adapter_dir: str | Path) -> ProbeHead:
    """The probe head saved in `adapter_dir`, in eval mode."""
    adapter_dir = Path(adapter_dir)
    if not (adapter_dir / PROBE_CONFIG).is_file():
        raise CalibtuneError(f"{adapter_dir}: no {PROBE_CONFIG}; not a probe adapter")
    config = json.loads((adapter_dir / PROBE_CONFIG).read_text())
    head = ProbeHead(config["in_features"], config["hidden"])
    head.load_state_dict(load_file(adapter_dir / PROBE_WEIGHTS))
    return head.eval()


def train_probe(cfg: DictConfig) -> Path:
    """Features from the frozen model once, then epochs of AdamW on the head; best head by
    `train.best_metric` on val is saved as adapter/."""
    from calibtune.train.recipe import check_train_config, is_better, read_training_data

    tc = cfg.train
    output_dir = Path(tc.output_dir).resolve()
    train_rows, val_rows = read_training_data(cfg)
    check_train_config(cfg, len(train_rows), 1)
    tokenizer = load_tokenizer(cfg.model)
    find_query_tokens(tokenizer, cfg.prompt.query_yes, cfg.prompt.query_no)
    set_seed(int(cfg.seed))
    model = load_model(cfg.model).eval()
    pad_id, device = tokenizer.pad_token_id, model.device

    def features(rows):
        examples = tokenize_examples(tokenizer, rows, with_answers=False)
        ids = [e.query_ids for e in examples]
        return probe_features(model, ids, pad_id, int(tc.eval_batch_size), device), torch.tensor(
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
    import calibtune
    from calibtune.examples import MANIFEST
    from calibtune.io import sha256_file
    from calibtune.models.loading import model_fingerprint
    from calibtune.runtime import git_commit

    dataset_manifest = Path(cfg.train.data_dir, MANIFEST).resolve()
    return {
        "dataset": {"manifest": str(dataset_manifest), "sha256": sha256_file(dataset_manifest)},
        "model": model_fingerprint(cfg.model),
        "versions": {"calibtune": calibtune.__version__, "torch": torch.__version__},
        "git_commit": git_commit(),
        "adapter": "adapter",
    }
