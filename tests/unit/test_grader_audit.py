"""Grader accuracy on the audit set: real responses of the default model (SmolLM2-135M-Instruct)
to built-in questions, each labeled by a person reading it against the facts (guide and every
disagreement: docs/data.md). Run with -s to see the disagreements."""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from calibtune.data.builtin import builtin_suite
from calibtune.data.grading import grade

AUDIT = Path(__file__).parents[1] / "fixtures" / "grader_audit.jsonl"


def test_grader_accuracy_on_the_audit_set():
    rows = [json.loads(line) for line in AUDIT.read_text(encoding="utf-8").splitlines()]
    domains = Counter(row["domain"] for row in rows)
    assert len(rows) >= 400 and set(domains) == {r["domain"] for r in builtin_suite()}
    wrong = [
        row
        for row in rows
        if int(grade(row["response"], row["answers"], None, row["grader"], row["question"]))
        != row["label"]
    ]
    accuracy = 1 - len(wrong) / len(rows)
    print(f"\ngrader accuracy on {len(rows)} audited responses: {accuracy:.4f}")
    for round_ in sorted({row["round"] for row in rows}):
        n = sum(row["round"] == round_ for row in rows)
        missed = sum(row["round"] == round_ for row in wrong)
        print(f"  round {round_}: {n - missed} of {n} ({1 - missed / n:.4f})")
    for row in wrong:
        print(f"  {row['id']}: label {row['label']}, {row['response']!r} ({row.get('note', '')})")
    assert accuracy >= 0.98
