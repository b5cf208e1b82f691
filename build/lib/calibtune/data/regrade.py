"""`calibtune data grade <labeled set> --grader G`: re-grade an existing labeled set with another
grader and report how often the two graders agree (overall and per domain).

    calibtune data grade outputs/run/data --grader substring
    calibtune data grade outputs/run/data --grader exact --out outputs/run/data-exact

With `--out`, writes a copy of the set labeled by the new grader (same splits, new manifest).
"""

from __future__ import annotations

import argparse
import json
from collections import defaultdict
from pathlib import Path

from calibtune.data.grading import GRADERS, grade
from calibtune.data.stage import accuracy_table
from calibtune.errors import ConfigError
from calibtune.examples import MANIFEST, SPLITS, read_labeled_split, split_path
from calibtune.io import sha256_file, write_json_atomic, write_jsonl_atomic


def regrade_rows(rows: list[dict], grader: str) -> list[dict]:
    """Copies of labeled rows graded by `grader` (soft labels re-graded over their samples)."""
    if grader == "judge":
        raise ConfigError(
            "re-grading with the judge needs a model: use `calibtune data data.grader=judge`"
        )
    regraded = []
    for row in rows:
        samples = row.get("samples") or [row["response"]]
        hits = [grade(s, row["answers"], row["choices"], grader, row["question"]) for s in samples]
        correct = int(hits[0]) if len(hits) == 1 else round(sum(hits) / len(hits), 6)
        regraded.append({**row, "correct": correct, "grader": grader})
    return regraded


def agreement(old: list[dict], new: list[dict]) -> dict:
    """Share of rows whose hard labels agree, overall and per domain, and both accuracies."""
    by_domain: dict[str, list[tuple[float, float]]] = defaultdict(list)
    for a, b in zip(old, new, strict=True):
        by_domain[a["domain"]].append((a["correct"], b["correct"]))
    by_domain["overall"] = [pair for pairs in list(by_domain.values()) for pair in pairs]

    def summary(pairs: list[tuple[float, float]]) -> dict:
        n = len(pairs)
        return {
            "n": n,
            "agreement": round(sum((a >= 0.5) == (b >= 0.5) for a, b in pairs) / n, 4),
            "accuracy_old": round(sum(a for a, _ in pairs) / n, 4),
            "accuracy_new": round(sum(b for _, b in pairs) / n, 4),
        }

    return {domain: summary(pairs) for domain, pairs in sorted(by_domain.items())}


def main(argv: list[str]) -> dict:
    """Command-line entry: re-grade, print the agreement table, optionally write the new set."""
    parser = argparse.ArgumentParser(
        prog="calibtune data grade", description=__doc__.splitlines()[0]
    )
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("--grader", required=True, choices=[g for g in GRADERS if g != "judge"])
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    splits = {s: read_labeled_split(args.data_dir, s) for s in SPLITS}
    old = [row for s in SPLITS for row in splits[s]]
    new_splits = {s: regrade_rows(splits[s], args.grader) for s in SPLITS}
    table = agreement(old, [row for s in SPLITS for row in new_splits[s]])
    print(f"{'domain':<20}{'n':>7}{'agree':>8}{'acc old':>9}{'acc new':>9}")
    for domain, entry in table.items():
        print(
            f"{domain:<20}{entry['n']:>7}{entry['agreement']:>8.3f}"
            f"{entry['accuracy_old']:>9.3f}{entry['accuracy_new']:>9.3f}"
        )
    if args.out is not None:
        manifest = json.loads((args.data_dir / MANIFEST).read_text(encoding="utf-8"))
        for split in SPLITS:
            write_jsonl_atomic(split_path(args.out, split), new_splits[split])
        manifest["grader"] = args.grader
        manifest["regraded_from"] = str(args.data_dir)
        manifest["grader_agreement"] = table
        manifest["accuracy"] = accuracy_table([row for s in SPLITS for row in new_splits[s]])
        manifest["files"] = {
            split_path(args.out, s).name: sha256_file(split_path(args.out, s)) for s in SPLITS
        }
        write_json_atomic(args.out / MANIFEST, manifest)
        print(f"re-graded set: {args.out}")
    return table
