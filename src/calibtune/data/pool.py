"""An answer pool: answered, graded rows with their base signals, shared by runs that differ only
in split, label count or (greedy answers) seed (`calibtune lodo`'s folds, label-count sweeps,
seeds), so each question is answered once (`data.pool_dir`).

Rows are keyed by question id inside a folder named by a hash of everything an answer depends on
(model, prompt config, generation settings, grader, the seed when answers are sampled, the
signals' temperatures and bins):
a run with other settings gets its own folder and answers afresh. A reused row keeps the current
run's own fields (its split, entity group, domain) and takes the pool's answer, grade, query and
signals.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from omegaconf import OmegaConf

from calibtune.io import read_jsonl, sha256_text, write_jsonl_atomic
from calibtune.models.signals import (
    SIGNALS_FILE,
    BaseSignals,
    concat,
    load_signals,
    save_signals,
)

ANSWER_FIELDS = ("prompt", "response", "samples", "grader", "correct", "query")
QUESTION_FIELDS = ("question", "choices", "answers")  # a pooled answer fits only these


@dataclass
class LabeledPart:
    """Labeled rows, their base signals (None when not recorded) and the model work done."""

    rows: list[dict]
    signals: BaseSignals | None
    work: Counter


def join_parts(parts: Sequence[LabeledPart]) -> LabeledPart:
    """Several parts as one (signals only when every part has them)."""
    signals = [p.signals for p in parts if p.rows]
    joined = concat(signals) if signals and all(s is not None for s in signals) else None
    work: Counter = Counter()
    for part in parts:
        work.update(part.work)  # (Counter addition would drop the zero counts)
    return LabeledPart([r for p in parts for r in p.rows], joined, work)


def pool_key(parts: dict) -> str:
    """The pool folder's name: a hash of what an answer and its signals depend on."""
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:16]


class AnswerPool:
    """Answered rows of one pool folder, by id, with their signals."""

    def __init__(self, folder: Path, key: dict[str, str]):
        self.folder, self.key = folder, key
        rows = read_jsonl(folder / "rows.jsonl") if (folder / "rows.jsonl").is_file() else []
        self.rows = {str(r["id"]): r for r in rows}
        self.signals = (
            load_signals(folder / SIGNALS_FILE)[0] if (folder / SIGNALS_FILE).is_file() else None
        )
        if self.signals is not None and self.signals.missing(list(self.rows)):
            self.rows, self.signals = {}, None  # a pool whose files disagree: start it again

    @classmethod
    def of(cls, cfg, parts: dict, key: dict[str, str]) -> AnswerPool | None:
        """The pool of `data.pool_dir` for these settings, or None when no pool is set."""
        root = OmegaConf.select(cfg, "data.pool_dir")
        if not root:
            return None
        return cls(Path(root) / pool_key(parts), key)

    def holds(self, row: dict) -> bool:
        """Whether the pool has an answer to `row`: its id, with the same question, choices and
        gold answers (another file's row under a reused id, or edited aliases, is answered and
        graded afresh)."""
        pooled = self.rows.get(str(row["id"]))
        return pooled is not None and all(pooled.get(k) == row.get(k) for k in QUESTION_FIELDS)

    def take(self, rows: Sequence[dict]) -> tuple[LabeledPart, list[dict]]:
        """The pooled answers of `rows` (in their order; each keeps its own fields) and the rows
        the pool does not hold."""
        held = [self.holds(r) for r in rows]
        found = [r for r, h in zip(rows, held, strict=True) if h]
        missing = [r for r, h in zip(rows, held, strict=True) if not h]
        labeled = [
            {
                **{k: v for k, v in r.items() if not k.startswith("_")},
                **{
                    k: self.rows[str(r["id"])][k]
                    for k in ANSWER_FIELDS
                    if k in self.rows[str(r["id"])]
                },
                "split": r.get("split", ""),
            }
            for r in found
        ]
        signals = None
        if found and self.signals is not None:
            signals = self.signals.select([str(r["id"]) for r in found])
        return LabeledPart(labeled, signals, Counter({"pooled_rows": len(found)})), missing

    def add(self, part: LabeledPart) -> None:
        """Add newly answered rows (and their signals) to the pool, atomically."""
        new = [r for r in part.rows if str(r["id"]) not in self.rows]
        if not new:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        ids = [str(r["id"]) for r in new]
        if part.signals is not None:
            fresh = part.signals.select(ids)
            self.signals = concat([self.signals, fresh]) if self.signals is not None else fresh
            save_signals(self.folder / SIGNALS_FILE, self.signals, self.key)
        self.rows.update({str(r["id"]): r for r in new})
        write_jsonl_atomic(self.folder / "rows.jsonl", list(self.rows.values()))
