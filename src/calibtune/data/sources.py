"""QA sources, each mapped to the QA input format of docs/data.md:

    {"id": "...", "question": "...", "answers": ["alias", ...], "domain": "...", "choices": null}

The built-in offline suite (calibtune.data.builtin), a user's JSONL file, or a Hugging Face
dataset through `datasets` with one mapping function per dataset schema (MAPPINGS). Every row is
validated; errors name the file (or dataset), the line (or row) and the field.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from pathlib import Path

from calibtune.errors import ConfigError, InputError
from calibtune.io import read_jsonl_numbered
from calibtune.models.prompts import CHOICE_LETTERS

SOURCE_KEY = "_source"  # "path:line" of the input row; dropped before anything is written


def question_key(question: str) -> str:
    """Stable id of a question text (whitespace and case folded)."""
    folded = " ".join(question.lower().split())
    return hashlib.sha256(folded.encode("utf-8")).hexdigest()[:16]


def validate_qa_row(row: dict, path: object, line: int | None) -> dict:
    """Check one QA row and fill defaults (qid, id, group, domain, choices); raise InputError
    if bad. `group` names the entity the question is about (default: its qid)."""
    question = row.get("question")
    if question is None:
        raise InputError(path, line, "question", "missing")
    if not isinstance(question, str) or not question.strip():
        raise InputError(path, line, "question", "must be a non-empty string")
    answers = row.get("answers")
    if answers is None:
        raise InputError(path, line, "answers", "missing")
    if isinstance(answers, str):
        answers = [answers]
    if not isinstance(answers, list) or not answers:
        raise InputError(path, line, "answers", "must be a non-empty list of accepted answers")
    if not all(isinstance(a, str | int | float) and str(a).strip() for a in answers):
        raise InputError(path, line, "answers", "every answer must be a non-empty string")
    choices = row.get("choices")
    if choices is not None:
        if not isinstance(choices, list) or len(choices) < 2 or len(choices) > len(CHOICE_LETTERS):
            raise InputError(path, line, "choices", "must be null or a list of 2-26 options")
        letters = set(CHOICE_LETTERS[: len(choices)])
        if not all(str(a).strip().upper() in letters for a in answers):
            raise InputError(
                path,
                line,
                "answers",
                f"with choices, answers must be letters among {sorted(letters)}",
            )
    group = row.get("group")
    if group is not None and not (
        (isinstance(group, str) and group.strip())
        or (
            isinstance(group, list)
            and group
            and all(isinstance(g, str) and g.strip() for g in group)
        )
    ):
        raise InputError(
            path,
            line,
            "group",
            "must be a non-empty string (or list of strings) naming the "
            "entity the question is about",
        )
    checked = dict(row)
    checked["answers"] = [str(a) for a in answers]
    checked["choices"] = choices
    checked["qid"] = str(row.get("qid") or question_key(question))
    checked["id"] = str(row.get("id") or checked["qid"])
    checked["group"] = group if group is not None else checked["qid"]
    checked["domain"] = str(row.get("domain") or "default")
    checked[SOURCE_KEY] = f"{path}:{line}" if line is not None else str(path)
    return checked


def read_qa_jsonl(path: str | os.PathLike) -> list[dict]:
    """Read and validate a QA JSONL file (docs/data.md); errors name file, line and field."""
    path = Path(path)
    numbered = read_jsonl_numbered(path)  # bad JSON, non-objects, empty files fail here
    line_numbers = [line for line, _ in numbered]
    checked = [validate_qa_row(row, path, line) for line, row in numbered]
    seen: dict[str, int] = {}
    for row, line in zip(checked, line_numbers, strict=True):
        if row["id"] in seen:
            raise InputError(
                path, line, "id", f"duplicate id {row['id']!r} (also on line {seen[row['id']]})"
            )
        seen[row["id"]] = line
    return checked


# --- Hugging Face datasets: one mapping per schema -------------------------------------------


def _letter(index: int) -> str:
    return CHOICE_LETTERS[index]


def map_triviaqa(record: dict) -> dict:
    """mandarjoshi/trivia_qa: question, answer{value, aliases} -> open-ended with all aliases."""
    answer = record["answer"]
    aliases = [answer["value"], *answer.get("aliases", [])]
    return {
        "id": record.get("question_id"),
        "question": record["question"],
        "answers": list(dict.fromkeys(a for a in aliases if a)),
    }


def map_sciq(record: dict) -> dict:
    """allenai/sciq: question, correct_answer, distractor1-3 -> four choices in a fixed order
    (shuffled by a hash of the question so the right letter is not always A)."""
    options = [
        record["correct_answer"],
        record["distractor1"],
        record["distractor2"],
        record["distractor3"],
    ]
    shift = int(question_key(record["question"]), 16) % len(options)
    choices = options[shift:] + options[:shift]
    return {
        "question": record["question"],
        "choices": choices,
        "answers": [_letter(choices.index(record["correct_answer"]))],
    }


def _labelled_choices(record: dict) -> dict:
    """ARC / CommonsenseQA: choices{label, text} and answerKey (a label) -> letters A, B, ..."""
    labels = list(record["choices"]["label"])
    key = str(record["answerKey"]).strip()
    if key not in labels:
        raise KeyError(f"answerKey {key!r} not among labels {labels}")
    return {
        "id": record.get("id"),
        "question": record["question"],
        "choices": list(record["choices"]["text"]),
        "answers": [_letter(labels.index(key))],
    }


def map_arc(record: dict) -> dict:
    """allenai/ai2_arc: id, question, choices{text,label}, answerKey ("A".. or "1"..)."""
    return _labelled_choices(record)


def map_commonsenseqa(record: dict) -> dict:
    """tau/commonsense_qa: id, question, choices{label,text}, answerKey."""
    return _labelled_choices(record)


def map_mmlu(record: dict) -> dict:
    """cais/mmlu: question, subject, choices[4], answer (index) -> domain is the subject."""
    return {
        "question": record["question"],
        "choices": list(record["choices"]),
        "answers": [_letter(int(record["answer"]))],
        "domain": record.get("subject") or None,
    }


def map_boolq(record: dict) -> dict:
    """google/boolq: question (lower case, no '?'), answer (bool) -> yes/no question."""
    question = record["question"].strip()
    question = question[:1].upper() + question[1:]
    if not question.endswith("?"):
        question += "?"
    return {"question": question, "answers": ["yes" if record["answer"] else "no"]}


MAPPINGS: dict[str, Callable[[dict], dict]] = {
    "triviaqa": map_triviaqa,
    "sciq": map_sciq,
    "arc": map_arc,
    "commonsenseqa": map_commonsenseqa,
    "mmlu": map_mmlu,
    "boolq": map_boolq,
}
LOCAL_BUILDERS = {".json": "json", ".jsonl": "json", ".parquet": "parquet", ".csv": "csv"}


def load_hf_records(dataset_cfg) -> tuple[list[dict], str]:
    """Raw records of a HF dataset (hub id, or local files in its schema) and a name for errors."""
    import datasets

    data_files = dataset_cfg.get("data_files")
    if data_files:
        files = [data_files] if isinstance(data_files, str) else list(data_files)
        suffix = Path(files[0]).suffix
        if suffix not in LOCAL_BUILDERS:
            raise ConfigError(f"dataset.data_files: unsupported file type {suffix!r}")
        for file in files:
            if not Path(file).is_file():
                raise InputError(file, None, None, "file not found")
        dataset = datasets.load_dataset(LOCAL_BUILDERS[suffix], data_files=files, split="train")
        where = files[0]
    else:
        try:
            dataset = datasets.load_dataset(
                dataset_cfg.path,
                dataset_cfg.get("config_name"),
                split=dataset_cfg.split,
                revision=dataset_cfg.get("revision"),
            )
        except Exception as err:  # hub unreachable, unknown id, ...
            raise ConfigError(
                f"cannot load dataset {dataset_cfg.path!r} ({type(err).__name__}: {err}); "
                "with no network, download it where there is one or set dataset.data_files"
            ) from None
        where = f"{dataset_cfg.path}[{dataset_cfg.split}]"
    return [dict(record) for record in dataset], where


def map_records(records: list[dict], mapping: str, where: str, domain: str) -> list[dict]:
    """Apply a named mapping to raw records and validate each (errors name the row)."""
    if mapping not in MAPPINGS:
        raise ConfigError(f"dataset.mapping={mapping!r}; choose one of {', '.join(MAPPINGS)}")
    rows = []
    for index, record in enumerate(records, start=1):
        try:
            mapped = MAPPINGS[mapping](record)
        except (KeyError, TypeError, ValueError, IndexError) as err:
            raise InputError(
                where, index, None, f"does not fit the {mapping} schema: {err}"
            ) from None
        mapped = {k: v for k, v in mapped.items() if v is not None}
        if record.get("group") is not None:  # an optional entity column of the user's files
            mapped["group"] = record["group"]
        mapped.setdefault("domain", domain)
        if "id" not in mapped:
            mapped["id"] = f"{mapping}/{index}"
        rows.append(validate_qa_row(mapped, where, index))
    if not rows:
        raise InputError(where, None, None, "dataset is empty")
    return rows


def load_qa_rows(dataset_cfg) -> list[dict]:
    """The validated QA rows of the configured source (dataset.kind: builtin | jsonl | hf)."""
    from calibtune.data.builtin import builtin_suite

    kind = dataset_cfg.get("kind", "builtin")
    if kind == "builtin":
        return [validate_qa_row(row, "builtin", None) for row in builtin_suite()]
    if kind == "jsonl":
        if not dataset_cfg.get("path"):
            raise ConfigError("dataset=jsonl needs dataset.path=<your QA JSONL file>")
        return read_qa_jsonl(dataset_cfg.path)
    if kind == "hf":
        records, where = load_hf_records(dataset_cfg)
        return map_records(
            records, dataset_cfg.mapping, where, dataset_cfg.get("domain") or dataset_cfg.name
        )
    raise ConfigError(f"dataset.kind={kind!r}; choose builtin, jsonl or hf")
