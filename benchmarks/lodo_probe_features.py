"""Would the answer-token signals help inside the probe? On the folds of a `calibtune lodo` run,
fit the linear probe (calibtune.models.probe.fit_linear_probe, the default method's fit) on each
fold's train rows with and without the base answer signals appended to the hidden state, and
score both on the fold's held-out domains (its test split), fold means side by side.

    PYTHONPATH=src .venv/bin/python benchmarks/lodo_probe_features.py outputs/lodo [min_per_class]

Per fold, one base-model pass over train, val and test (the eval's own code path:
calibtune.eval.stage.compute_confidences, follow-up queries: hidden state, ptrue, pavg, pmin,
seqlogp from one pass) is cached in <run>/fold<i>/probe_features_train_test.npz; a re-run only
refits.
Val is not used: the probe chooses its strength on entity-group folds of train.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
from omegaconf import OmegaConf

from calibtune.eval import confidence
from calibtune.eval.baselines import logit
from calibtune.eval.stage import compute_confidences
from calibtune.examples import read_labeled_split, row_group
from calibtune.metrics import auroc, auroc_within, brier, ece
from calibtune.models.confidence import attach_adapter
from calibtune.models.loading import load_model, load_tokenizer
from calibtune.models.probe import fit_linear_probe

SIGNALS = ("base/ptrue", "base/pavg", "base/pmin", "base/seqlogp")
SPLITS = ("train", "test")


def fold_features(fold: Path, splits: tuple[str, ...] = SPLITS) -> dict[str, np.ndarray]:
    """Hidden states, answer signals, labels, domains and groups of the fold's (or run's) rows of
    `splits` (test: the held-out domains eval scored), cached beside the fold."""
    cache = fold / f"probe_features_{'_'.join(splits)}.npz"
    if cache.is_file():
        return dict(np.load(cache, allow_pickle=True))
    cfg = OmegaConf.load(fold / "eval" / "config.yaml")
    tokenizer = load_tokenizer(cfg.model)
    qm = attach_adapter(load_model(cfg.model), None)
    held_out = set(cfg.eval.test_domains or [])
    out: dict[str, np.ndarray] = {}
    for split in splits:
        rows = read_labeled_split(cfg.eval.data_dir, split)
        if split == "test" and held_out:
            rows = [r for r in rows if r.get("domain") in held_out]
        found = compute_confidences(
            cfg, qm, tokenizer, rows, split, tuned=False, answers=True, full_ece=False, hidden=True
        )
        out[f"{split}/hidden"] = found[confidence.HIDDEN]
        for name in SIGNALS:
            out[f"{split}/{name}"] = found[name]
        out[f"{split}/y"] = np.array([float(r["correct"]) for r in rows])
        out[f"{split}/domain"] = np.array([str(r.get("domain")) for r in rows])
        out[f"{split}/group"] = np.array([row_group(r) for r in rows])
    np.savez(cache, **out)
    return out


def design(features: dict, split: str, with_signals: bool) -> np.ndarray:
    """The hidden state, with the logits of the base signals appended when `with_signals`."""
    x = features[f"{split}/hidden"]
    if not with_signals:
        return x
    extra = [np.nan_to_num(logit(features[f"{split}/{n}"])) for n in SIGNALS]
    return np.column_stack([x, *extra])


def scores(features: dict, with_signals: bool, min_per_class: int) -> dict[str, float | None]:
    """ECE, Brier, AUROC pooled and within on the fold's test of the probe fitted on train."""
    y = (features["train/y"] >= 0.5).astype(int)
    head, _ = fit_linear_probe(
        design(features, "train", with_signals), y, features["train/group"], seed=0
    )
    c, y_test = head.probability(design(features, "test", with_signals)), features["test/y"]
    within = auroc_within(c, y_test, features["test/domain"], min_per_class=min_per_class).value
    return {
        "ece": ece(c, y_test),
        "brier": brier(c, y_test),
        "auroc": auroc(c, y_test),
        "auroc_within": within,
    }


def main() -> None:
    run = Path(sys.argv[1])
    min_per_class = int(sys.argv[2]) if len(sys.argv) > 2 else 10
    folds = sorted(p for p in run.glob("fold*") if (p / "eval" / "config.yaml").is_file())
    table: dict[str, list[dict]] = {"probe": [], "probe + answer signals": []}
    for fold in folds:
        features = fold_features(fold)
        table["probe"].append(scores(features, False, min_per_class))
        table["probe + answer signals"].append(scores(features, True, min_per_class))
        print(fold.name, {k: v[-1] for k, v in table.items()}, flush=True)
    print(
        f"\n| unseen domains, mean over {len(folds)} folds | ECE | Brier | AUROC | AUROC within |"
    )
    print("|---|---|---|---|---|")
    for name, per_fold in table.items():
        cells = []
        for metric in ("ece", "brier", "auroc", "auroc_within"):
            values = [f[metric] for f in per_fold if f[metric] is not None]
            cells.append(f"{np.mean(values):.3f} ± {np.std(values, ddof=1):.3f}")
        print(f"| {name} | " + " | ".join(cells) + " |")


if __name__ == "__main__":
    main()
