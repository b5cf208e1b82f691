"""A val/test labeled set from the graded chunks an unfinished data stage has written so far.

    .venv/bin/python benchmarks/labeled_set_from_partial.py <run dir>/data/.partial <out dir>

Reads every `chunk-*.jsonl` under the data stage's `.partial/` folder (read only), splits the
rows by question id with the eval stage's `split_by_question` (seed 0, a third to val) and
writes val.jsonl, test.jsonl and manifest.json, which `calibtune eval eval.data_dir=<out dir>`
reads. Used when a run's data stage has not finished in the time available (docs/BENCHMARKS.md).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from calibtune.eval.stage import split_by_question
from calibtune.examples import validate_labeled_row
from calibtune.io import write_json_atomic, write_jsonl_atomic


def main(argv: list[str]) -> None:
    """Build the labeled set and print its split sizes and accuracies."""
    partial, out = Path(argv[0]), Path(argv[1])
    chunks = sorted(partial.rglob("chunk-*.jsonl"))
    rows = [json.loads(line) for chunk in chunks for line in chunk.open() if line.strip()]
    splits = split_by_question(rows, 0, 1 / 3)
    for name, split_rows in splits.items():
        split_rows = [{**row, "split": name} for row in split_rows]
        for line, row in enumerate(split_rows, start=1):
            validate_labeled_row(row, out / f"{name}.jsonl", line)
        write_jsonl_atomic(out / f"{name}.jsonl", split_rows)
        accuracy = sum(row["correct"] for row in split_rows) / len(split_rows)
        print(f"{name}: {len(split_rows)} rows, accuracy {accuracy:.3f}")
    counts = {name: len(split_rows) for name, split_rows in splits.items()}
    source = f"{len(rows)} graded answers from {len(chunks)} chunks of {partial}"
    write_json_atomic(out / "manifest.json", {"counts": counts, "source": source})


if __name__ == "__main__":
    main(sys.argv[1:])
