"""Does the policy's guarantee depend on what is re-split? Policy re-splits of one eval dir
(benchmarks/bench_production.py's `policy_resplits`, the eval's fitting code) with val / test
re-split by question (a question's phrasings together, as the bench does) or by row (every row
its own unit), side by side at one answer risk.

    PYTHONPATH=src .venv/bin/python benchmarks/policy_resplit_unit.py <eval dir> [--answer-risk 0.4]
        [--resplits 200] [--seed 1] [--shrinkage 10]

Learn-then-Test's p-values treat val rows as exchangeable with future ones; phrasings of one
question share their outcome, so re-splitting by question shows what that assumption costs.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
import bench_production as bench  # noqa: E402


def main(argv: list[str] | None = None) -> None:
    """Re-split both ways and print each violation share."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("eval_dir", type=Path)
    parser.add_argument("--answer-risk", type=float, default=0.4)
    parser.add_argument("--resplits", type=int, default=200)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--shrinkage", type=float, default=10.0)
    args = parser.parse_args(argv)
    bench.MAPS["shrinkage"] = args.shrinkage
    bench.POLICY["answer_risk"] = args.answer_risk
    val = bench.load(args.eval_dir, "val_predictions.jsonl", bench.METHOD)
    test = bench.load(args.eval_dir, "predictions.jsonl", bench.METHOD)
    for unit in ("question", "row"):
        if unit == "row":
            val["qid"] = np.array([f"val{i}" for i in range(val["y"].size)])
            test["qid"] = np.array([f"test{i}" for i in range(test["y"].size)])
        r = bench.policy_resplits(val, test, args.resplits, args.seed)
        print(
            f"by {unit}: {r['splits']} splits, violation share {r['violation_share']:.3f} "
            f"(answer risk {args.answer_risk}, delta {r['delta']}), answering nothing in "
            f"{r['splits_answering_nothing']}, mean answer share {r['shares_mean']['answer']:.3f}"
        )


if __name__ == "__main__":
    main()
