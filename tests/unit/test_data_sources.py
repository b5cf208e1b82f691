"""QA sources: the built-in suite, JSONL validation, and each HF mapping on a local file in that
dataset's real schema (the hub is unreachable in tests)."""

from __future__ import annotations

import json
from collections import Counter

import pytest
from omegaconf import OmegaConf

from calibtune.config import conf_dir
from calibtune.data.builtin import builtin_suite
from calibtune.data.grading import grade
from calibtune.data.sources import load_qa_rows, read_qa_jsonl
from calibtune.errors import InputError


def test_builtin_suite_size_domains_and_phrasings():
    rows = builtin_suite()
    assert len({r["question"] for r in rows}) == len(rows) >= 8000  # no question twice
    domains = Counter(r["domain"] for r in rows)
    assert len(domains) >= 5 and "arithmetic" in domains
    per_fact = Counter(r["qid"] for r in rows)
    assert max(per_fact.values()) >= 2  # several phrasings share one qid
    assert len({r["id"] for r in rows}) == len(rows)
    assert builtin_suite() == rows  # fixed, config-independent


def test_builtin_answers_grade_themselves_correct():
    for row in builtin_suite()[::97]:
        assert grade(row["answers"][0], row["answers"], None, row["grader"], row["question"]), row


def test_builtin_facts_are_real():
    by_question = {r["question"]: r["answers"] for r in builtin_suite()}
    assert "Paris" in by_question["What is the capital of France?"]
    assert by_question["What is the chemical symbol of Gold?"] == ["Au"]
    assert by_question["What is the atomic number of Carbon?"] == ["6"]
    assert "Europe" in by_question["What continent is Germany in?"]


def test_read_qa_jsonl_fills_defaults_and_keeps_unknown_keys(tmp_path):
    path = tmp_path / "qa.jsonl"
    row = {"question": "Capital of Peru?", "answers": "Lima", "source": "me"}
    path.write_text(json.dumps(row) + "\n\n")
    (read,) = read_qa_jsonl(path)
    assert read["answers"] == ["Lima"] and read["source"] == "me"
    assert read["domain"] == "default" and read["choices"] is None and read["qid"] == read["id"]


@pytest.mark.parametrize(
    ("row", "field"),
    [
        ({"question": "", "answers": ["a"]}, "question"),
        ({"question": "Q?", "answers": ["C"], "choices": ["x", "y"]}, "answers"),
        ({"question": "Q?", "answers": [""]}, "answers"),
        ({"question": "Q?", "answers": ["A"], "choices": "x"}, "choices"),
    ],
)
def test_read_qa_jsonl_rejects_bad_rows(tmp_path, row, field):
    path = tmp_path / "qa.jsonl"
    path.write_text(
        json.dumps({"question": "Fine?", "answers": ["y"]}) + "\n" + json.dumps(row) + "\n"
    )
    with pytest.raises(InputError) as err:
        read_qa_jsonl(path)
    assert (err.value.line, err.value.field) == (2, field)


# One record per dataset, in the schema the hub dataset really has.
HF_RECORDS = {
    "triviaqa": {
        "question": "Which planet is the Red Planet?",
        "question_id": "tc_1",
        "question_source": "x",
        "entity_pages": {"doc_source": [], "filename": [], "title": [], "wiki_context": []},
        "search_results": {
            "description": [],
            "filename": [],
            "rank": [],
            "title": [],
            "url": [],
            "search_context": [],
        },
        "answer": {
            "aliases": ["Mars", "Planet Mars"],
            "normalized_aliases": ["mars"],
            "matched_wiki_entity_name": "",
            "normalized_matched_wiki_entity_name": "",
            "normalized_value": "mars",
            "type": "WikipediaEntity",
            "value": "Mars",
        },
    },
    "sciq": {
        "question": "What gas do plants absorb?",
        "distractor3": "helium",
        "distractor1": "oxygen",
        "distractor2": "argon",
        "correct_answer": "carbon dioxide",
        "support": "...",
    },
    "arc": {
        "id": "Mercury_1",
        "question": "Which is a mammal?",
        "choices": {"text": ["shark", "whale", "trout", "eel"], "label": ["1", "2", "3", "4"]},
        "answerKey": "2",
    },
    "commonsenseqa": {
        "id": "csqa1",
        "question": "Where do you keep milk?",
        "question_concept": "milk",
        "choices": {
            "label": ["A", "B", "C", "D", "E"],
            "text": ["fridge", "oven", "car", "desk", "bed"],
        },
        "answerKey": "A",
    },
    "mmlu": {
        "question": "2 + 2 = ?",
        "subject": "elementary_mathematics",
        "choices": ["3", "4", "5", "6"],
        "answer": 1,
    },
    "boolq": {"question": "is the sun a star", "answer": True, "passage": "..."},
}
EXPECTED = {
    "triviaqa": ("Which planet is the Red Planet?", ["Mars", "Planet Mars"], None, "triviaqa"),
    "arc": ("Which is a mammal?", ["B"], ["shark", "whale", "trout", "eel"], "arc"),
    "commonsenseqa": (
        "Where do you keep milk?",
        ["A"],
        ["fridge", "oven", "car", "desk", "bed"],
        "commonsenseqa",
    ),
    "mmlu": ("2 + 2 = ?", ["B"], ["3", "4", "5", "6"], "elementary_mathematics"),
    "boolq": ("Is the sun a star?", ["yes"], None, "boolq"),
}


@pytest.mark.parametrize("name", sorted(HF_RECORDS))
def test_hf_mapping_on_local_file_in_real_schema(tmp_path, name):
    path = tmp_path / f"{name}.jsonl"
    path.write_text(json.dumps(HF_RECORDS[name]) + "\n")
    dataset_cfg = OmegaConf.load(conf_dir() / "dataset" / f"{name}.yaml")
    dataset_cfg.data_files = str(path)
    (row,) = load_qa_rows(dataset_cfg)
    if name == "sciq":
        assert sorted(row["choices"]) == ["argon", "carbon dioxide", "helium", "oxygen"]
        letter = row["answers"][0]
        assert row["choices"]["ABCD".index(letter)] == "carbon dioxide"
    else:
        assert (row["question"], row["answers"], row["choices"], row["domain"]) == EXPECTED[name]


def test_hf_record_outside_schema_names_the_row(tmp_path):
    path = tmp_path / "arc.jsonl"
    good = HF_RECORDS["arc"]
    path.write_text(json.dumps(good) + "\n" + json.dumps({**good, "answerKey": "9"}) + "\n")
    dataset_cfg = OmegaConf.load(conf_dir() / "dataset" / "arc.yaml")
    dataset_cfg.data_files = str(path)
    with pytest.raises(InputError, match="arc schema") as err:
        load_qa_rows(dataset_cfg)
    assert err.value.line == 2
