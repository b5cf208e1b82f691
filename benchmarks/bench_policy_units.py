"""Policy p-values by row vs by group on clustered synthetic val sets: validity and power.

    .venv/bin/python benchmarks/bench_policy_units.py [--draws 100] [--groups 300 1000 3000]

Each val set has groups of three rows that share confidence and outcome (a question's
phrasings). For the answer threshold (target 0.2, delta 0.05 as each of the policy's two
sequences gets):
- validity: outcomes independent of confidence, error rate 0.22; every certified threshold is a
  false promise, so the share of draws that certify one must stay <= delta;
- power: calibrated confidences (uniform, right with probability c); the share of items the
  certified threshold answers (an oracle answers 40 %: the error above t = 0.6 is 0.2).
Prints both units side by side and the group / row ratio of the answered share.
"""

from __future__ import annotations

import argparse

import numpy as np

TARGET, DELTA, PHRASINGS = 0.2, 0.05, 3


def clustered(n_groups: int, error_rate: float | None, seed: int):
    """(confidences, outcomes, groups): `error_rate` None for calibrated outcomes."""
    rng = np.random.default_rng(seed)
    c = rng.uniform(0.0, 1.0, n_groups)
    right = c if error_rate is None else np.full(n_groups, 1.0 - error_rate)
    y = (rng.uniform(size=n_groups) < right).astype(float)
    groups = np.repeat(np.arange(n_groups), PHRASINGS)
    return np.repeat(c, PHRASINGS), np.repeat(y, PHRASINGS), groups


def one_size(n_groups: int, draws: int) -> dict:
    """False-certification share (null) and mean answered share (calibrated), by unit."""
    from calibtune.eval.policy import ltt_threshold

    out = {}
    for unit in ("row", "group"):
        false, shares = 0, []
        for seed in range(draws):
            c, y, groups = clustered(n_groups, 0.22, seed)
            fit = ltt_threshold(c, y, TARGET, DELTA, groups=groups if unit == "group" else None)
            false += fit["threshold"] is not None
            c, y, groups = clustered(n_groups, None, 10_000 + seed)
            fit = ltt_threshold(c, y, TARGET, DELTA, groups=groups if unit == "group" else None)
            shares.append(
                0.0 if fit["threshold"] is None else float(np.mean(c >= fit["threshold"]))
            )
        out[unit] = {"false_certified": false / draws, "answered_share": float(np.mean(shares))}
    return out


def main() -> None:
    """Print one line per val size."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--draws", type=int, default=100)
    parser.add_argument("--groups", type=int, nargs="+", default=[300, 1000, 3000])
    args = parser.parse_args()
    print(f"target {TARGET}, delta {DELTA}, {PHRASINGS} rows a group, {args.draws} draws each")
    for n_groups in args.groups:
        r = one_size(n_groups, args.draws)
        row, group = r["row"], r["group"]
        print(
            f"{n_groups} groups: false certifications row {row['false_certified']:.2f} / group "
            f"{group['false_certified']:.2f}; answered share row {row['answered_share']:.3f} / "
            f"group {group['answered_share']:.3f} (ratio {group['answered_share'] / max(row['answered_share'], 1e-9):.2f})",
            flush=True,
        )


if __name__ == "__main__":
    main()
