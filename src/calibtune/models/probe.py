"""The probe head of `method=probe`: a small head on the frozen model's hidden state
(`model.feature_layer`) at the query's last token and, with `probe.answer_signals`, the logits
of the base model's answer-token signals (pavg, seqlogp, pmin), saved as `probe.safetensors` +
`probe_config.json` in an adapter dir; and the linear probe's fit (L2 logistic regression),
shared by `method=probe` and the eval's `baseline/probe`."""

from __future__ import annotations

import json
import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file
from sklearn.linear_model import LogisticRegression, LogisticRegressionCV
from sklearn.preprocessing import StandardScaler

from calibtune.errors import CalibtuneError, InputError
from calibtune.examples import group_kfold
from calibtune.metrics import logit, sigmoid

PROBE_WEIGHTS = "probe.safetensors"
PROBE_CONFIG = "probe_config.json"
OUT_OF_FOLD = "oof_confidences.jsonl"  # train rows scored out of fold, beside a logistic probe
SIGNAL_CLIP = 1e-6  # answer signals are clipped to [SIGNAL_CLIP, 1 - SIGNAL_CLIP] before the logit
PROBE_STRENGTHS = np.logspace(-4, 1, 6)  # inverse L2 strengths the linear probe's folds choose from
TEMPERATURE_RANGE = (0.05, 20.0)  # the probe's out-of-fold temperature is kept within these


def signal_logits(stats: torch.Tensor) -> torch.Tensor:
    """[N, 3] logits of the answer-token signals (pavg, seqlogp, pmin) [N, 3]; an empty
    response (NaN) reads 0 (probability one half)."""
    p = stats.double().clamp(SIGNAL_CLIP, 1 - SIGNAL_CLIP)
    return torch.nan_to_num(torch.log(p) - torch.log1p(-p), nan=0.0).float()


def head_inputs(hidden: torch.Tensor, stats: torch.Tensor | None, answer_signals: bool):
    """A probe's features [N, F]: the hidden states [N, H], with the answer signals' logits
    (`stats`: [N, 3] pavg, seqlogp, pmin) beside them when `answer_signals`."""
    if not answer_signals:
        return hidden.float()
    if stats is None:
        raise CalibtuneError("this probe head reads the answer's base signals: none given")
    return torch.cat([hidden.float(), signal_logits(stats).to(hidden.device)], dim=1)


class ProbeHead(torch.nn.Module):
    """Linear (hidden=0) or one-hidden-layer head: features [N, F] -> logit of correct [N].
    `layer`: the hidden layer its features are read from (`model.feature_layer`); with
    `answer_signals` the features are that hidden state and the `signal_logits` of the answer's
    base signals (`inputs`). Both are saved with the head."""

    def __init__(
        self,
        in_features: int,
        hidden: int = 0,
        dropout: float = 0.0,
        layer: int = -1,
        answer_signals: bool = False,
    ):
        super().__init__()
        self.in_features, self.hidden, self.layer = in_features, hidden, layer
        self.answer_signals = answer_signals
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

    def inputs(self, hidden: torch.Tensor, stats: torch.Tensor | None) -> torch.Tensor:
        """The head's features of rows with these hidden states and answer signals."""
        return head_inputs(hidden, stats, self.answer_signals)

    @torch.no_grad()
    def temper(self, temperature: float) -> ProbeHead:
        """Divide the head's logit by `temperature` (its last layer's weight and bias)."""
        last = self.net[-1]
        last.weight.div_(temperature)
        last.bias.div_(temperature)
        return self

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        """Logit that the proposed answer is correct."""
        return self.net(features.float()).squeeze(-1)

    def two_way(self, features: torch.Tensor) -> torch.Tensor:
        """[no, yes] logits, so the query loss and metrics apply unchanged."""
        logit = self(features)
        return torch.stack([torch.zeros_like(logit), logit], dim=-1)

    @torch.no_grad()
    def probability(self, features: np.ndarray) -> np.ndarray:
        """P(correct) of each row of `features` [N, H], as float64."""
        return torch.sigmoid(self(torch.as_tensor(features))).double().numpy()


def fit_linear_probe(
    x: np.ndarray,
    y: np.ndarray,
    groups: Sequence[str],
    seed: int,
    layer: int = -1,
    answer_signals: bool = False,
    strength: float | None = None,
) -> tuple[ProbeHead, float]:
    """L2 logistic regression on standardised features, its inverse strength chosen from
    PROBE_STRENGTHS by log loss over up to 5 folds that keep each of `groups` in one fold (entity
    groups, or domains: `probe.strength_folds`; never val or test); returned as a linear head
    (the standardisation folded into its weights) and the chosen strength (`layer`: where `x`
    was read, and `answer_signals`: whether `x` ends in the signals' logits, kept on the head).
    sklearn fits it (L-BFGS to convergence): no learning rate or steps to tune. A given
    `strength` is fitted as it is (no folds)."""
    groups = np.asarray(groups)
    n_groups = len(set(groups.tolist()))
    if (strength is None and n_groups < 2) or np.unique(y).size < 2:
        raise CalibtuneError(
            f"the linear probe needs two classes and two entity groups (got {np.unique(y).size} "
            f"class(es), {n_groups} group(s))"
        )
    scaler = StandardScaler().fit(x)
    if strength is None:
        folds = list(group_kfold(groups).split(x, y, groups))
        model = LogisticRegressionCV(
            Cs=PROBE_STRENGTHS,
            cv=folds,
            scoring="neg_log_loss",
            max_iter=2000,
            random_state=seed,
            n_jobs=min(len(folds), os.cpu_count() or 1),  # the folds in parallel: same fit
        )
    else:
        model = LogisticRegression(C=strength, max_iter=2000, random_state=seed)
    with warnings.catch_warnings():  # sklearn 1.9 warns about fitted attributes this never reads
        warnings.simplefilter("ignore", FutureWarning)
        model.fit(scaler.transform(x), y)
    weight = model.coef_[0] / scaler.scale_
    head = ProbeHead(x.shape[1], layer=layer, answer_signals=answer_signals)
    linear = head.net[-1]
    with torch.no_grad():
        linear.weight.copy_(torch.as_tensor(weight)[None])
        linear.bias.fill_(float(model.intercept_[0] - weight @ scaler.mean_))
    return head.eval(), float(model.C_[0] if strength is None else strength)


def out_of_fold_probabilities(
    x: np.ndarray, y: np.ndarray, groups: Sequence[str], seed: int, strength: float
) -> np.ndarray:
    """P(correct) of each training row from a linear probe fitted at `strength` (the one chosen
    for the head) on the other folds of `groups`: confidences of the head's kind and level on
    rows it never saw, which can join val in fitting calibration maps (as sklearn's
    CalibratedClassifierCV(ensemble=False) scores its calibration rows) and fit its temperature."""
    groups = np.asarray(groups)
    out = np.empty(len(y))
    for fit_rows, held_out in group_kfold(groups).split(x, y, groups):
        fit = (x[fit_rows], y[fit_rows], groups[fit_rows], seed)
        fold_probe, _ = fit_linear_probe(*fit, strength=strength)
        out[held_out] = fold_probe.probability(x[held_out])
    return out


def fold_temperature(oof: np.ndarray, y: np.ndarray) -> float | None:
    """The temperature T whose sigmoid(logit / T) fits outcomes `y` best (log loss) given the
    out-of-fold confidences `oof`: 1 / the slope of a logistic regression of `y` on their logits
    without intercept (sklearn fits it), within TEMPERATURE_RANGE; None when they rank no better
    than chance (slope <= 0: no temperature fits)."""
    model = LogisticRegression(C=np.inf, fit_intercept=False)
    slope = model.fit(logit(oof)[:, None], y).coef_[0, 0]
    if slope <= 0:
        return None
    return float(np.clip(1.0 / slope, *TEMPERATURE_RANGE))


def tempered(p: np.ndarray, temperature: float) -> np.ndarray:
    """Confidences `p` with their logits divided by `temperature`."""
    return sigmoid(logit(p) / temperature)


def write_probe_files(head: ProbeHead, directory: Path, extra: dict) -> dict[str, tuple]:
    """probe.safetensors + probe_config.json (with the `extra` fields) into `directory`;
    returns the saved tensors' shapes, for the caller to verify before publishing the dir."""
    state = {k: v.detach().contiguous().cpu() for k, v in head.state_dict().items()}
    save_file(state, Path(directory) / PROBE_WEIGHTS)
    config = {"type": "probe", "in_features": head.in_features, "hidden": head.hidden}
    config = {**config, "layer": head.layer, "answer_signals": head.answer_signals, **extra}
    (Path(directory) / PROBE_CONFIG).write_text(json.dumps(config, indent=2), encoding="utf-8")
    return {k: tuple(v.shape) for k, v in state.items()}


def is_probe_dir(path: str | Path) -> bool:
    """Whether `path` holds a saved probe head."""
    return (Path(path) / PROBE_CONFIG).is_file()


def is_baseline_probe_fit(adapter_dir: str | Path) -> bool:
    """Whether `adapter_dir` holds the eval's baseline/probe fit: a probe head fitted by logistic
    regression on the hidden state alone, its strength chosen on entity-group folds (a config
    without `strength_folds` predates the option and chose on entity groups). False for a LoRA
    adapter."""
    if not is_probe_dir(adapter_dir):
        return False
    config = json.loads((Path(adapter_dir) / PROBE_CONFIG).read_text())
    return (
        config.get("fit") == "logistic"
        and config.get("strength_folds", "entity") == "entity"
        and not config.get("answer_signals", False)
        and config.get("temperature_folds", "none") == "none"
    )


def check_probe_layer(adapter_dir: str | Path | None, layer: int) -> None:
    """Refuse, before any model work, a probe head (method=probe or alora_head) fitted on another
    hidden layer than this run's `model.feature_layer`: the recorded signals and the passes of
    this run read `layer`."""
    if adapter_dir is None or not is_probe_dir(adapter_dir):
        return
    path = Path(adapter_dir) / PROBE_CONFIG
    fitted = json.loads(path.read_text()).get("layer", -1)
    if fitted != layer:
        raise InputError(
            path,
            None,
            "layer",
            f"this head reads hidden layer {fitted}, but model.feature_layer={layer}: "
            f"run with model.feature_layer={fitted}",
        )


def load_probe(adapter_dir: str | Path) -> ProbeHead:
    """The probe head saved in `adapter_dir`, in eval mode."""
    adapter_dir = Path(adapter_dir)
    if not is_probe_dir(adapter_dir):
        raise CalibtuneError(f"{adapter_dir}: no {PROBE_CONFIG}; not a probe adapter")
    config = json.loads((adapter_dir / PROBE_CONFIG).read_text())
    # a config without "layer" predates model.feature_layer (it read the last hidden state),
    # one without "answer_signals" predates probe.answer_signals (the hidden state alone)
    head = ProbeHead(
        config["in_features"],
        config["hidden"],
        layer=config.get("layer", -1),
        answer_signals=bool(config.get("answer_signals", False)),
    )
    head.load_state_dict(load_file(adapter_dir / PROBE_WEIGHTS))
    return head.eval()
