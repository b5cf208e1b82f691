"""Reading a monitor log: one validated row per line, timestamps parsed, in time order.

Log rows: {"id", "timestamp" (ISO 8601), "domain", "confidence", "correct" (0/1, optional:
feedback arrives late and partially), "raw_confidence" (needed for refits), "action"}.
"""

from __future__ import annotations

import os
from datetime import UTC, datetime
from pathlib import Path

from calibtune.errors import InputError
from calibtune.eval.policy import ACTIONS
from calibtune.io import check_probability, read_jsonl_numbered

REQUIRED_FIELDS = ("id", "timestamp", "domain", "confidence")


def parse_timestamp(value: object) -> datetime | None:
    """An ISO 8601 timestamp as an aware datetime (naive ones are taken as UTC); None if bad."""
    if not isinstance(value, str):
        return None
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def check_row(path: Path, line: int, row: dict) -> dict:
    """One validated log row (timestamp parsed, correct as 0/1/None); InputError names the field."""
    for field in REQUIRED_FIELDS:
        if row.get(field) is None:
            raise InputError(path, line, field, "missing")
    if not isinstance(row["domain"], str) or not row["domain"]:
        raise InputError(path, line, "domain", "must be a non-empty string")
    check_probability(path, line, "confidence", row["confidence"])
    if row.get("raw_confidence") is not None:
        check_probability(path, line, "raw_confidence", row["raw_confidence"])
    timestamp = parse_timestamp(row["timestamp"])
    if timestamp is None:
        raise InputError(path, line, "timestamp", f"not an ISO 8601 time: {row['timestamp']!r}")
    correct = row.get("correct")
    if correct is not None and correct not in (0, 1):
        raise InputError(path, line, "correct", f"must be 0, 1 or absent, got {correct!r}")
    if row.get("action") is not None and row["action"] not in ACTIONS:
        raise InputError(path, line, "action", f"must be one of {ACTIONS}, got {row['action']!r}")
    return {**row, "timestamp": timestamp, "correct": None if correct is None else int(correct)}


def read_log(path: str | os.PathLike) -> list[dict]:
    """The validated log rows in timestamp order; the first bad row fails with file:line:field."""
    path = Path(path)
    checked = [check_row(path, line, row) for line, row in read_jsonl_numbered(path)]
    return sorted(checked, key=lambda r: r["timestamp"])
