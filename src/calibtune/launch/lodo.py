"""`calibtune lodo`: leave-domains-out cross-validation of the whole pipeline.

    calibtune lodo [lodo.folds=4] [lodo.domains=[...]] [run_dir=outputs/lodo] [overrides]

The domains (the built-in suite's, after data.include_domains / exclude_domains, or
`lodo.domains`) are dealt into `lodo.folds` folds (seeded shuffle, round-robin). Fold i runs
`calibtune run` under <run_dir>/fold<i> with data.holdout_domains = its domains (they, and
their entities, go to test only: never trained on nor used for validation), test holding
them alone (data.holdout_test_only, so every test row is scored), and
eval.test_domains = its domains (scored on them alone). The folds share one answer pool
(data.pool_dir, default <run_dir>/pool): each question is answered and graded, and its base
signals recorded, once over all folds; only the split and what follows are per fold. Then `calibtune leaderboard
--aggregate` over the folds gives the mean ± sd over folds, written to <run_dir>/aggregate.md.
A finished fold is reused by a re-run (calibtune run reuses finished stages).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
from omegaconf import DictConfig, OmegaConf

from calibtune.errors import ConfigError

log = logging.getLogger(__name__)
# The default run on the idle 2-core CPU of docs/BENCHMARKS.md ("The default run": 4,000 examples
# of the 30-domain suite, the linear probe): data 341 s, train + eval 58 s. The folds share one
# answer pool and their questions overlap: each later fold answered about 12 % of a fold anew
# ("Leave-domains-out, full-size folds": 5,459 questions for 4 folds of 4,000).
DATA_SECONDS, FOLD_REST_SECONDS, NEW_SHARE = 341, 58, 0.12
DEFAULT_EXAMPLES = 4000


def suite_domains(cfg: DictConfig) -> list[str]:
    """The domains to deal into folds: `lodo.domains`, or every built-in domain kept by
    data.include_domains / data.exclude_domains."""
    from calibtune.data.builtin import builtin_suite
    from calibtune.data.stage import filter_domains

    builtin = cfg.dataset.kind == "builtin"
    available = sorted({r["domain"] for r in filter_domains(builtin_suite(), cfg.data)})
    chosen = list(cfg.lodo.domains or [])
    if not chosen:
        if not builtin:
            raise ConfigError("lodo.domains: name the domains to hold out (dataset not builtin)")
        return available
    unknown = sorted(set(chosen) - set(available)) if builtin else []
    if unknown:
        raise ConfigError(f"lodo.domains: {unknown} not in the built-in suite ({available})")
    return sorted(set(chosen))


def domain_folds(domains: list[str], folds: int, seed: int) -> list[list[str]]:
    """`domains` dealt into `folds` folds after a seeded shuffle (sizes differ by at most 1)."""
    if not 2 <= folds <= len(domains):
        raise ConfigError(f"lodo.folds={folds}: needs 2 to {len(domains)} (the domains)")
    order = np.random.default_rng(seed).permutation(len(domains))
    return [sorted(domains[i] for i in order[k::folds]) for k in range(folds)]


def fold_config(cfg: DictConfig, index: int, held_out: list[str]) -> DictConfig:
    """The `calibtune run` config of one fold: its own run_dir, its domains held out."""
    fold = OmegaConf.create(OmegaConf.to_container(cfg, resolve=False))
    fold.stage = "run"
    fold.run_dir = str(Path(cfg.run_dir) / f"fold{index}")
    fold.data.pool_dir = cfg.data.pool_dir or str(Path(cfg.run_dir) / "pool")  # answer once
    fold.data.holdout_domains = held_out
    fold.data.holdout_test_only = True
    fold.eval.test_domains = held_out
    return fold


def expected_seconds(cfg: DictConfig, folds: int) -> float:
    """Rough wall clock of all folds on a 2-core CPU, scaled by data.n_examples: one fold's
    answers, a share of them for each later fold, and every fold's train and eval."""
    answers = DATA_SECONDS * (1 + NEW_SHARE * (folds - 1))
    return (answers + FOLD_REST_SECONDS * folds) * cfg.data.n_examples / DEFAULT_EXAMPLES


def run_lodo(cfg: DictConfig) -> Path:
    """Run every fold's pipeline, then aggregate the folds' unseen-domain eval metrics."""
    from calibtune.config import check_config
    from calibtune.launch.aggregate import run_aggregate
    from calibtune.pipeline import run_pipeline

    check_config(cfg)
    folds = domain_folds(suite_domains(cfg), cfg.lodo.folds, cfg.seed)
    configs = [fold_config(cfg, i, held_out) for i, held_out in enumerate(folds)]
    for fold in configs:
        check_config(fold)
    minutes = expected_seconds(cfg, len(folds)) / 60
    print(
        f"calibtune lodo: {len(folds)} folds {folds}; expected about {minutes:.0f} min on an "
        "idle 2-core CPU (2-3x that on a shared one; less with answers already in the pool or "
        "on a GPU)",
        flush=True,
    )
    for index, fold in enumerate(configs):
        start = time.monotonic()
        log.info("fold %d of %d: held out %s", index + 1, len(folds), folds[index])
        run_pipeline(fold)
        left = (len(folds) - index - 1) * (time.monotonic() - start) / 60
        log.info("fold %d done; about %.0f min left at this pace", index + 1, left)
    out = Path(cfg.run_dir)
    print(run_aggregate(out))
    return out
