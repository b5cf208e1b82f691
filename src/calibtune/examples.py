"""The labeled confidence example format (docs/data.md): the file contract between the data
stage (which writes it) and the train and eval stages (which read it).

A labeled set is a directory holding `train.jsonl`, `val.jsonl`, `test.jsonl` and
`manifest.json`. Each line is one example with at least LABELED_FIELDS:

    id        unique example id            question  the question text
    qid       id of the question (splits are made by question)
    domain    e.g. "capitals"              answers   accepted answers (aliases; letters for MC)
    choices   list or null (multiple choice)
    prompt    the rendered answer prompt (chat template applied) the model answered under
    response  the model's answer text      correct   1/0, or a soft label in [0, 1]
    grader    which grader labelled it     split     train | val | test
    query     the rendered uncertainty query (question + proposed answer + "Is ... correct?")
"""

from __future__ import annotations

import os
from pathlib import Path

from calibtune.errors import InputError
from calibtune.io import check_probability, read_jsonl_numbered

SPLITS = ("train", "val", "test")
LABELED_FIELDS = (
    "id",
    "qid",
    "domain",
    "question",
    "answers",
    "choices",
    "prompt",
    "response",
    "correct",
    "grader",
    "split",
    "query",
)
MANIFEST = "manifest.json"


def row_group(row: dict) -> str:
    """The cluster a row belongs to: its entity `group` (a list joined), else its question id."""
    group = row.get("group")
    if isinstance(group, list):
        return "|".join(sorted(str(g) for g in group))
    return str(group or row.get("qid") or row.get("id"))


def group_kfold(groups, n_folds: int = 5):
    """sklearn's GroupKFold with up to `n_folds` folds (fewer when there are fewer groups), so
    that each entity group stays in one fold; the caller checks there are at least two groups."""
    from sklearn.model_selection import GroupKFold

    return GroupKFold(n_splits=min(n_folds, len(set(list(groups)))))


def split_path(data_dir: str | os.PathLike, split: str) -> Path:
    """Path of one split's file in a labeled set directory."""
    return Path(data_dir) / f"{split}.jsonl"


def validate_labeled_row(row: dict, path: Path, line: int) -> None:
    """Raise InputError naming file, line and field for a malformed labeled example."""
    for field in LABELED_FIELDS:
        if field not in row:
            raise InputError(path, line, field, "missing")
    for field in ("question", "prompt", "query"):
        if not isinstance(row[field], str) or not row[field].strip():
            raise InputError(path, line, field, "must be a non-empty string")
    if not isinstance(row["response"], str):
        raise InputError(path, line, "response", "must be a string")
    check_probability(path, line, "correct", row["correct"])


def read_labeled_split(data_dir: str | os.PathLike, split: str) -> list[dict]:
    """Read and validate one split of a labeled set (errors name file, line and field)."""
    path = split_path(data_dir, split)
    if not Path(data_dir, MANIFEST).is_file():
        raise InputError(
            Path(data_dir, MANIFEST), None, None, "no manifest: is this a calibtune labeled set?"
        )
    numbered = read_jsonl_numbered(path)
    for line, row in numbered:
        validate_labeled_row(row, path, line)
    return [row for _, row in numbered]
