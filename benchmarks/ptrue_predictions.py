"""ptrue of a labeled set's val and test rows, saved as they are computed (resumable, any prefix
is a random sample): for production figures when a full eval stage does not fit the time.

    .venv/bin/python benchmarks/ptrue_predictions.py <labeled set dir> <out dir> [--adapter DIR]
    .venv/bin/python benchmarks/ptrue_predictions.py <labeled set dir> <out dir> --finalize

Rows are taken in a seeded random order, in batches, through `calibtune.Scorer.raw_confidences`
(the eval stage's ptrue passes; with no adapter the base model's ptrue) and appended to
<out dir>/rows.jsonl. `--finalize` writes val_predictions.jsonl and
predictions.jsonl (eval-stage format, column base/ptrue or tuned/ptrue) from the rows done.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

from calibtune.config import compose
from calibtune.examples import read_labeled_split
from calibtune.io import write_jsonl_atomic
from calibtune.models.loading import load_model, load_tokenizer
from calibtune.serve.score import Scorer, load_tuned_model


def finalize(out: Path, column: str) -> None:
    """Split rows.jsonl into the eval stage's prediction files."""
    done = [json.loads(line) for line in (out / "rows.jsonl").open()]
    for split, name in (("val", "val_predictions.jsonl"), ("test", "predictions.jsonl")):
        rows = [{k: v for k, v in r.items() if k != "split"} for r in done if r["split"] == split]
        write_jsonl_atomic(out / name, rows)
        print(f"{split}: {len(rows)} rows with {column}")


def main() -> None:
    """Compute (or finalize) the predictions."""
    parser = argparse.ArgumentParser()
    parser.add_argument("data_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--adapter", default=None)
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--finalize", action="store_true")
    args = parser.parse_args()
    column = "tuned/ptrue" if args.adapter else "base/ptrue"
    if args.finalize:
        finalize(args.out, column)
        return
    cfg = compose("eval", [f"eval.data_dir={args.data_dir}"])
    rows = [r for s in ("val", "test") for r in read_labeled_split(args.data_dir, s)]
    args.out.mkdir(parents=True, exist_ok=True)
    done_file = args.out / "rows.jsonl"
    done = {json.loads(line)["id"] for line in done_file.open()} if done_file.is_file() else set()
    order = np.random.default_rng(0).permutation(len(rows))
    todo = [rows[i] for i in order if rows[i]["id"] not in done]
    model = load_tuned_model(cfg.model, args.adapter) if args.adapter else load_model(cfg.model)
    scorer = Scorer(model, load_tokenizer(cfg.model), cfg.prompt, batch_size=args.batch_size)
    with done_file.open("a", encoding="utf-8") as handle:
        for start in range(0, len(todo), args.batch_size):
            batch = todo[start : start + args.batch_size]
            ptrue = scorer.raw_confidences(
                [r["question"] for r in batch],
                [r["response"] for r in batch],
                [r.get("choices") for r in batch],
            )
            for row, value in zip(batch, ptrue, strict=True):
                record = {k: row.get(k) for k in ("id", "qid", "domain", "correct", "split")}
                handle.write(json.dumps({**record, column: float(value)}) + "\n")
            handle.flush()
            print(f"{len(done) + start + len(batch)} / {len(rows)}", flush=True)


if __name__ == "__main__":
    main()
