"""The hand-written style-shift set (calibtune/data/styleshift.jsonl, docs/data.md "The
style-shift set"): it loads through the QA reader and `dataset=styleshift`, has enough rows per
subject, no duplicate ids or questions, every gold alias grades right under the grader `auto`
picks (and wrong answers grade wrong), and no question is, or starts like, a built-in one."""

from __future__ import annotations

import re
from collections import Counter
from fnmatch import fnmatch
from pathlib import Path

import pytest

from calibtune.config import compose
from calibtune.data.builtin import builtin_suite
from calibtune.data.grading import auto_grader, grade, normalize_words
from calibtune.data.sources import load_qa_rows, read_qa_jsonl
from calibtune.resources import PACKAGE_DIR, package_file

STYLESHIFT = PACKAGE_DIR / "data" / "styleshift.jsonl"
REPO = Path(__file__).resolve().parents[2]
MIN_ROWS, MIN_DOMAINS, MIN_PER_DOMAIN = 1000, 15, 60
DIFFICULTIES = {"easy", "medium", "hard"}


@pytest.fixture(scope="module")
def rows() -> list[dict]:
    return read_qa_jsonl(STYLESHIFT)


def folded(question: str) -> str:
    """A question up to case, accents, punctuation, articles and spacing."""
    return " ".join(normalize_words(question))


def right(row: dict, response: str) -> bool:
    """Does `response` grade right under the grader `data.grader=auto` picks for `row`?"""
    return grade(response, row["answers"], row["choices"], auto_grader(row), row["question"])


def test_size_subjects_and_difficulty(rows):
    assert len(rows) >= MIN_ROWS
    per_domain = Counter(row["domain"] for row in rows)
    big = {d: n for d, n in per_domain.items() if n >= MIN_PER_DOMAIN}
    assert len(big) >= MIN_DOMAINS and big == per_domain, per_domain
    levels = Counter(row["difficulty"] for row in rows)
    assert set(levels) == DIFFICULTIES
    assert all(n >= len(rows) / 4 for n in levels.values()), levels  # roughly a third each


def test_ids_groups_and_questions_are_unique_and_well_formed(rows):
    assert len({row["id"] for row in rows}) == len(rows)
    for row in rows:
        assert re.fullmatch(rf"ss-{row['domain']}-\d{{3}}", row["id"]), row["id"]
        assert isinstance(row["group"], str), row["id"]
        assert re.fullmatch(r"[a-z-]+/[a-z0-9-]+", row["group"]), row["group"]
        assert row["choices"] is None and row["question"].rstrip().endswith("?"), row["id"]
    questions = Counter(folded(row["question"]) for row in rows)
    assert [q for q, n in questions.items() if n > 1] == []


def test_every_alias_grades_right_alone_and_in_a_sentence(rows):
    for row in rows:
        assert auto_grader(row) == "exact", row["id"]  # open questions, no row names a grader
        for alias in row["answers"]:
            assert right(row, alias), (row["id"], alias)
            # in a sentence too: no alias is only an echo of the question
            assert right(row, f"I think the answer is {alias}."), (row["id"], alias)


def test_wrong_answers_grade_wrong(rows):
    for row in rows:
        assert not right(row, "I don't know."), row["id"]
    by_domain: dict[str, list[dict]] = {}
    for row in rows:
        by_domain.setdefault(row["domain"], []).append(row)
    checked = 0
    for same in by_domain.values():
        for row, other in zip(same, same[1:] + same[:1], strict=True):
            gold = {folded(a) for a in row["answers"]}
            response = other["answers"][0]
            if any(g in folded(response) or folded(response) in g for g in gold):
                continue  # the two share an answer (two "six" questions): not a wrong answer
            assert not right(row, response), (row["id"], response)
            checked += 1
    assert checked >= len(rows) * 0.9


def test_numbers_grade_right_in_sentences_with_other_numbers(rows):
    """Years and counts are graded `exact` (digits and the word form): a response that dates
    the answer ("on November 9, 1989") or names another number in another role stays right,
    where the numeric grader (exactly one new number) would mark it wrong; a neighbouring
    number is wrong."""
    numbers = [row for row in rows if row["answers"][0].isdigit()]
    assert len(numbers) >= 30
    for row in numbers:
        gold = int(row["answers"][0])
        assert right(row, f"Record 654321 of the archive says {gold}."), row["id"]
        assert not right(row, f"Record 654321 of the archive says {gold + 1}."), row["id"]
        assert not right(row, f"{gold} or {gold + 1}"), row["id"]
    wall = next(row for row in rows if row["question"] == "In what year did the Berlin Wall fall?")
    assert right(wall, "The Berlin Wall fell on November 9, 1989.")
    assert not grade("The Berlin Wall fell on November 9, 1989.", ["1989"], None, "numeric")


def test_no_question_is_or_starts_like_a_builtin_question(rows):
    builtin = builtin_suite()
    builtin_questions = {folded(row["question"]) for row in builtin}
    assert [row["id"] for row in rows if folded(row["question"]) in builtin_questions] == []
    # not the built-in templates' style either: no question shares a built-in one's first four
    # words ("what is capital of", "what is chemical symbol", "which country is paris")
    openings = {tuple(normalize_words(row["question"])[:4]) for row in builtin}
    same_start = [
        row["question"] for row in rows if tuple(normalize_words(row["question"])[:4]) in openings
    ]
    assert same_start == []


def test_dataset_config_reads_the_packaged_file(rows):
    cfg = compose("data", ["dataset=styleshift"])
    assert cfg.dataset.kind == "jsonl"
    assert Path(cfg.dataset.path) == STYLESHIFT == Path(package_file("data/styleshift.jsonl"))
    loaded = load_qa_rows(cfg.dataset)
    assert [r["id"] for r in loaded] == [r["id"] for r in rows]
    # the eval stage reads the same file as a raw QA input
    eval_cfg = compose("eval", ["dataset=styleshift", "eval.data_dir=${dataset.path}"])
    assert Path(eval_cfg.eval.data_dir) == STYLESHIFT


def test_package_file_stays_inside_the_package():
    with pytest.raises(ValueError, match="outside"):
        package_file("../../pyproject.toml")


def test_the_wheel_ships_the_file():
    """pyproject's package-data names the file (tests/packaging/test_wheel.py builds the wheel)."""
    tomllib = pytest.importorskip("tomllib")  # Python >= 3.11
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = pyproject["tool"]["setuptools"]["package-data"]["calibtune"]
    relative = STYLESHIFT.relative_to(PACKAGE_DIR).as_posix()
    assert any(fnmatch(relative, pattern) for pattern in patterns), patterns
