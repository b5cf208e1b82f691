"""Choosing and splitting examples: exact sizes, by question, balanced, holdout, leakage."""

from __future__ import annotations

from collections import Counter

import pytest
from omegaconf import OmegaConf

from calibtune.data.builtin import builtin_suite
from calibtune.data.sources import validate_qa_row
from calibtune.data.stage import assign_splits, check_leakage
from calibtune.errors import ConfigError, InputError


def data_cfg(**overrides):
    base = {
        "n_examples": 600,
        "val_size": 100,
        "test_size": 100,
        "holdout_domains": [],
        "holdout_test_only": False,
    }
    return OmegaConf.create({**base, **overrides})


@pytest.fixture(scope="module")
def suite():
    return [validate_qa_row(r, "builtin", None) for r in builtin_suite()]


def test_exact_sizes_split_by_question_and_balanced(suite):
    rows = assign_splits(suite, data_cfg(), seed=0)
    assert Counter(r["split"] for r in rows) == {"train": 400, "val": 100, "test": 100}
    qid_splits = {}
    for row in rows:
        assert qid_splits.setdefault(row["qid"], row["split"]) == row["split"]
    per_domain = Counter(r["domain"] for r in rows)
    assert len(per_domain) == len({r["domain"] for r in suite}) and max(
        per_domain.values()
    ) < 2 * min(per_domain.values())
    check_leakage(rows)


def test_split_depends_only_on_seed(suite):
    first = [(r["id"], r["split"]) for r in assign_splits(suite, data_cfg(), seed=0)]
    assert first == [(r["id"], r["split"]) for r in assign_splits(suite, data_cfg(), seed=0)]
    assert first != [(r["id"], r["split"]) for r in assign_splits(suite, data_cfg(), seed=1)]


def test_holdout_domain_only_in_test(suite):
    rows = assign_splits(suite, data_cfg(holdout_domains=["arithmetic"]), seed=0)
    assert {r["split"] for r in rows if r["domain"] == "arithmetic"} == {"test"}
    assert Counter(r["split"] for r in rows)["test"] == 100
    assert len({r["domain"] for r in rows if r["split"] == "test"}) > 1  # others in test too
    held = {"arithmetic", "currencies"}  # their groups hold facts of other domains too
    cfg = data_cfg(holdout_domains=sorted(held), holdout_test_only=True)
    rows = assign_splits(suite, cfg, seed=0)
    assert Counter(r["split"] for r in rows) == {"train": 400, "val": 100, "test": 100}
    assert {r["domain"] for r in rows if r["split"] == "test"} == held
    assert {r["split"] for r in rows if r["domain"] in held} == {"test"}
    check_leakage(rows)


def test_bad_sizes_are_a_config_error(suite):
    with pytest.raises(ConfigError, match="n_examples"):
        assign_splits(suite, data_cfg(n_examples=150), seed=0)


def test_leakage_by_text_names_source_line_and_field():
    rows = [
        {"qid": "a", "question": "80 + 7 =", "split": "train", "_source": "qa.jsonl:1"},
        {"qid": "b", "question": "80 - 7 =", "split": "test", "_source": "qa.jsonl:2"},
    ]
    check_leakage(rows)  # different questions, though they differ only in a symbol
    rows.append({"qid": "c", "question": "80  + 7 =", "split": "val", "_source": "qa.jsonl:3"})
    with pytest.raises(InputError, match="leakage") as err:
        check_leakage(rows)
    assert (err.value.path, err.value.line, err.value.field) == ("qa.jsonl", 3, "question")


def test_shards_partition_the_examples_and_stay_balanced(suite):
    from calibtune.data.stage import shard_rows

    rows = assign_splits(suite, data_cfg(n_examples=3000, val_size=500, test_size=500), seed=0)
    shards = [shard_rows(rows, i, 4) for i in range(4)]
    assert sorted(r["id"] for s in shards for r in s) == sorted(r["id"] for r in rows)
    for shard in shards:
        assert len({r["domain"] for r in shard}) == len({r["domain"] for r in suite})


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_every_split_has_every_domain(suite, seed):
    """Stratified by domain: even the smallest domains (a dozen entity groups) reach every
    split, in proportion to the split sizes."""
    rows = assign_splits(suite, data_cfg(n_examples=3000, val_size=500, test_size=500), seed)
    per_domain = Counter(r["domain"] for r in rows)
    for split, share in (("train", 2 / 3), ("val", 1 / 6), ("test", 1 / 6)):
        counts = Counter(r["domain"] for r in rows if r["split"] == split)
        assert set(counts) == set(per_domain), (split, set(per_domain) - set(counts))
        for domain, n in per_domain.items():
            assert abs(counts[domain] - share * n) <= 0.1 * n + 6, (
                split,
                domain,
                counts[domain],
                n,
            )


@pytest.mark.parametrize("n_examples", [4000, 6000])
def test_same_question_text_under_two_qids_stays_in_one_split(suite, n_examples):
    """The built-in suite asks some questions under two ids (e.g. a capital shared by two
    countries); they must land in one split, or the leakage check rightly fails the build."""
    rows = assign_splits(suite, data_cfg(n_examples=n_examples, test_size=1000), seed=0)
    check_leakage(rows)
    twin = [
        validate_qa_row({"qid": q, "question": "Capital of X?", "answers": ["A"]}, "t", None)
        for q in ("a", "b")
    ]
    others = [
        validate_qa_row({"question": f"Q{i}?", "answers": ["A"]}, "t", None) for i in range(8)
    ]
    together = 0
    for seed in range(10):
        cfg = data_cfg(n_examples=10, val_size=2, test_size=2)
        splits = {r["qid"]: r["split"] for r in assign_splits(twin + others, cfg, seed)}
        if "a" in splits and "b" in splits:  # a group may be trimmed to fit a split
            assert splits["a"] == splits["b"]
            together += 1
    assert together >= 5


def splits_of_groups(rows) -> dict[str, set[str]]:
    """The splits each entity group landed in."""
    found: dict[str, set[str]] = {}
    for row in rows:
        found.setdefault(row["group"], set()).add(row["split"])
    return found


@pytest.mark.parametrize("holdout", [[], ["currencies"], ["element_names", "continents"]])
def test_no_entity_group_in_two_splits(suite, holdout):
    """Facts about one entity (a country's capital, its inverse, its currency...) share a split,
    also under holdout_domains, whose rows are test-only and whose test entities are unseen."""
    cfg = data_cfg(n_examples=6000, val_size=1000, test_size=1000, holdout_domains=holdout)
    rows = assign_splits(suite, cfg, seed=0)
    assert Counter(r["split"] for r in rows) == {"train": 4000, "val": 1000, "test": 1000}
    groups = splits_of_groups(rows)
    assert all(len(splits) == 1 for splits in groups.values()), [
        (g, s) for g, s in groups.items() if len(s) > 1
    ][:5]
    multi_domain = {r["group"] for r in rows if r["domain"] == "capitals"} & {
        r["group"] for r in rows if r["domain"] == "capital_country"
    }
    assert len(multi_domain) > 10  # inverse questions really share groups
    for domain in holdout:
        held = [r for r in rows if r["domain"] == domain]
        assert held and {r["split"] for r in held} == {"test"}
    check_leakage(rows)


def test_groups_of_the_builtin_suite(suite):
    by_id = {r["id"]: r["group"] for r in suite}
    assert by_id["capitals/FR/0"] == by_id["capital_country/FR/0"] == "country/FR"
    assert by_id["currencies/FR/0"] == by_id["continents/FR/0"] == "country/FR"
    assert by_id["element_symbols/Fe/0"] == by_id["atomic_numbers/Fe/1"] == "element/Fe"
    assert by_id["arithmetic/3+4/0"] == by_id["arithmetic/4+3/1"] == "arithmetic/3,4"
    paris = [r for r in suite if r["domain"] == "city_country" and "Paris" in r["question"]]
    assert paris and {r["group"] for r in paris} == {"country/FR"}  # a capital's inverse


def test_leakage_by_group_and_user_groups():
    rows = [
        validate_qa_row({"question": "Capital of X?", "answers": ["A"], "group": "x"}, "t", 1),
        validate_qa_row({"question": "Currency of X?", "answers": ["B"], "group": "x"}, "t", 2),
        validate_qa_row({"question": "Capital of Y?", "answers": ["C"]}, "t", 3),
    ]
    assert rows[2]["group"] == rows[2]["qid"]  # default: the question id
    leaky = [
        {**rows[0], "split": "train"},
        {**rows[1], "split": "test"},
        {**rows[2], "split": "val"},
    ]
    with pytest.raises(InputError, match="group 'x' is in train and in test") as err:
        check_leakage(leaky)
    assert (err.value.path, err.value.line, err.value.field) == ("t", 2, "group")
    with pytest.raises(InputError) as err:
        validate_qa_row({"question": "Q?", "answers": ["A"], "group": 3}, "qa.jsonl", 7)
    assert (err.value.path, err.value.line, err.value.field) == ("qa.jsonl", 7, "group")
    for seed in range(5):
        cfg = data_cfg(n_examples=3, val_size=1, test_size=1)
        splits = splits_of_groups(assign_splits(rows, cfg, seed))
        assert all(len(s) == 1 for s in splits.values())
