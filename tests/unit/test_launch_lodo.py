"""Leave-domains-out folds: a seeded partition of the domains, checked before any work."""

from __future__ import annotations

import pytest

from calibtune.config import compose
from calibtune.errors import ConfigError
from calibtune.launch.lodo import domain_folds, fold_config, suite_domains

DOMAINS = [f"d{i}" for i in range(9)]


def test_folds_partition_the_domains_evenly_and_follow_the_seed():
    folds = domain_folds(DOMAINS, 4, seed=0)
    assert sorted(d for fold in folds for d in fold) == DOMAINS
    assert sorted(len(fold) for fold in folds) == [2, 2, 2, 3]
    assert domain_folds(DOMAINS, 4, seed=0) == folds
    assert domain_folds(DOMAINS, 4, seed=1) != folds


@pytest.mark.parametrize("folds", [1, 10])
def test_fold_count_outside_two_to_the_domain_count_is_refused(folds):
    with pytest.raises(ConfigError, match="lodo.folds"):
        domain_folds(DOMAINS, folds, seed=0)


def test_suite_domains_are_the_builtin_ones_after_include_and_exclude():
    cfg = compose("run", ["data.exclude_domains=[arithmetic]"])
    domains = suite_domains(cfg)
    assert "arithmetic" not in domains and {"capitals", "currencies"} <= set(domains)
    picked = compose("run", ["lodo.domains=[currencies,capitals]"])
    assert suite_domains(picked) == ["capitals", "currencies"]
    with pytest.raises(ConfigError, match="not in the built-in suite"):
        suite_domains(compose("run", ["lodo.domains=[capitals,astrology]"]))


def test_a_fold_holds_its_domains_out_of_training_and_scores_only_them(tmp_path):
    cfg = compose("run", [f"run_dir={tmp_path}"])
    fold = fold_config(cfg, 2, ["capitals", "currencies"])
    assert fold.run_dir == str(tmp_path / "fold2")
    assert fold.data.output_dir == str(tmp_path / "fold2" / "data")
    assert (
        list(fold.data.holdout_domains)
        == list(fold.eval.test_domains)
        == ["capitals", "currencies"]
    )
    assert fold.data.holdout_test_only and not cfg.data.holdout_test_only
    assert cfg.data.holdout_domains == []  # the parent config is left as it was
    assert fold.data.pool_dir == str(tmp_path / "pool")  # every fold shares one answer pool
    assert cfg.data.pool_dir is None
    own = compose("run", [f"run_dir={tmp_path}", f"data.pool_dir={tmp_path}/mine"])
    assert fold_config(own, 0, ["capitals"]).data.pool_dir == str(tmp_path / "mine")
