"""Baselines trained on the same labels as the tuned model (the labeled set's train split), scored
on the same val and test rows: `domain_prior` (per-domain train accuracy), `logreg` (logistic
regression over base-model confidences) and `probe` (a linear probe: logistic regression on the
base model's last hidden state at the query's last token, the input `method=probe` trains its head
on). They show what a tuned confidence must beat: knowing the domain alone, a cheap model of
signals the base model already gives, or a read-out of what the base model already knows."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from calibtune.examples import MANIFEST, read_labeled_split, row_group, split_path
from calibtune.metrics import logit
from calibtune.models.probe import fit_linear_probe

DOMAIN_PRIOR, LOGREG, PROBE = "baseline/domain_prior", "baseline/logreg", "baseline/probe"
TRAINED = (DOMAIN_PRIOR, LOGREG, PROBE)
BASE_FEATURES = ("base/pavg", "base/pmin", "base/seqlogp")  # probabilities, used as they are
FEATURE_METHODS = (*BASE_FEATURES, "base/ptrue")  # what the train rows' forward passes give


def read_train_rows(data_dir: str | Path, limit: int, seed: int) -> tuple[list[dict], str | None]:
    """Up to `limit` train rows of a labeled set (a seeded sample, in file order), or no rows and
    the reason there are none (a raw QA file, no train split, `limit` 0)."""
    data_dir = Path(data_dir)
    if limit == 0:
        return [], "disabled (eval.baseline_train_max=0)"
    if not (data_dir / MANIFEST).is_file():
        return [], "eval.data_dir is a raw QA file: no train split to fit baselines on"
    if not split_path(data_dir, "train").is_file():
        return [], f"{split_path(data_dir, 'train')} does not exist"
    rows = read_labeled_split(data_dir, "train")
    if not rows:
        return [], "the train split is empty"
    if len(rows) > limit:
        picked = np.sort(np.random.default_rng(seed).permutation(len(rows))[:limit])
        rows = [rows[i] for i in picked]
    return rows, None


def outcomes(rows: Sequence[dict]) -> np.ndarray:
    """Each row's graded correctness as a float."""
    return np.array([float(r["correct"]) for r in rows])


def domains_of(rows: Sequence[dict]) -> list[str]:
    """Each row's domain ("all" when it has none), as the eval stage names them."""
    return [str(r.get("domain") or "all") for r in rows]


def domain_prior(
    train_domains: Sequence[str], y_train: np.ndarray, domains: Sequence[str]
) -> np.ndarray:
    """Per-domain train accuracy for each row's domain; the overall train accuracy for a domain
    unseen in train."""
    train_domains = np.asarray(train_domains, dtype=object)
    table = {d: float(np.mean(y_train[train_domains == d])) for d in set(train_domains.tolist())}
    overall = float(np.mean(y_train))
    return np.array([table.get(d, overall) for d in domains])


def features(
    confidences: dict[str, np.ndarray],
    responses: Sequence[str],
    domains: Sequence[str],
    vocabulary: Sequence[str],
) -> np.ndarray:
    """One row per example: pavg, pmin, seqlogp, base ptrue logit, log(1 + response length in
    characters), and a one-hot of the domain over `vocabulary` (the train domains). Missing
    confidences stay NaN (imputed by the fitted model)."""
    columns = [np.asarray(confidences[m], dtype=np.float64) for m in BASE_FEATURES]
    columns.append(logit(np.asarray(confidences["base/ptrue"], dtype=np.float64)))
    columns.append(np.log1p([len(r) for r in responses]))
    domains = np.asarray(domains, dtype=object)
    columns += [(domains == d).astype(np.float64) for d in vocabulary]
    return np.column_stack(columns)


def fit_logreg(x: np.ndarray, y: np.ndarray, seed: int) -> Pipeline:
    """Logistic regression on standardised features, NaNs imputed with the train mean."""
    model = make_pipeline(
        SimpleImputer(strategy="mean", keep_empty_features=True),
        StandardScaler(),
        LogisticRegression(max_iter=1000, random_state=seed),
    )
    return model.fit(x, y)


def trained_baselines(
    train_rows: Sequence[dict],
    train_confidences: dict[str, np.ndarray],
    scored: dict[str, tuple[Sequence[dict], dict[str, np.ndarray]]],
    seed: int,
    hidden: dict[str, np.ndarray] | None = None,
) -> tuple[dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Fit the baselines on the train rows; their confidences for each split of `scored`
    (name -> (rows, base confidences)), and the reason for any baseline not fitted. `hidden`
    (split name -> [N, H] base hidden states, "train" included) enables the probe."""
    y_train, train_domains = outcomes(train_rows), domains_of(train_rows)
    out: dict[str, dict[str, np.ndarray]] = {name: {} for name in scored}
    for name, (rows, _) in scored.items():
        out[name][DOMAIN_PRIOR] = domain_prior(train_domains, y_train, domains_of(rows))
    labels = (y_train >= 0.5).astype(int)  # soft labels: the majority grade
    if np.unique(labels).size < 2:
        reason = "the train rows hold a single class"
        return out, {LOGREG: reason, PROBE: reason}
    vocabulary = sorted(set(train_domains))
    train_responses = [r["response"] for r in train_rows]
    x_train = features(train_confidences, train_responses, train_domains, vocabulary)
    model = fit_logreg(x_train, labels, seed)
    for name, (rows, confidences) in scored.items():
        x = features(confidences, [r["response"] for r in rows], domains_of(rows), vocabulary)
        out[name][LOGREG] = model.predict_proba(x)[:, 1]
    if hidden is None:
        return out, {PROBE: "disabled (eval.baseline_probe=false)"}
    groups = [row_group(r) for r in train_rows]
    if min(np.bincount(labels)) < 5 or len(set(groups)) < 2:
        return out, {PROBE: "too few train rows of a class (or groups) for the probe's folds"}
    # method=probe's fit with probe.strength_folds=entity
    probe, _ = fit_linear_probe(hidden["train"], labels, groups, seed)
    for name in scored:
        out[name][PROBE] = probe.probability(hidden[name])
    return out, {}
