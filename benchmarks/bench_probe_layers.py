"""Which hidden layer should the probe read: the default probe fitted on each layer's state at the
query's last token, in distribution, on domains held out of its fit, and on other labeled sets.

    .venv/bin/python benchmarks/bench_probe_layers.py <labeled dir> [--extra DIR ...]
        [--layers 18 21 24 27 -1] [--hidden-only] [--lodo-seeds 0 1] [--lodo-folds 4]
        [--batch-size 32] [--features features.npz] [--out layers.json] [--overrides k=v ...]

One base pass over every row of the labeled set (train, val, test) and of each `--extra` dir
(labeled rows in val.jsonl / test.jsonl, e.g. the style-shift eval's `eval/labeled`) keeps the
hidden state of every `--layers` layer (`model.feature_layer`'s numbering: 0 the embeddings, i
after decoder layer i, -1 the last), and one answer pass the answer signals (pavg, seqlogp,
pmin); `--features` caches them (reused when it holds these sets and layers). For each layer the
probe of `method=probe` (`calibtune.models.probe.fit_linear_probe`, its strength chosen on the
folds `probe.strength_folds=auto` resolves to; the hidden state and the answer signals' logits as
`probe.answer_signals=true`, the default, reads them; `--hidden-only`: the hidden state alone,
`probe.answer_signals=false`; without `probe.temperature_folds`'s temperature, which changes
no ranking) is fitted on train and scored on test and
val (ECE, AUROC, within-domain AUROC over domains with 10 rows of each grade) and on each extra
set; `lodo` refits it on train without each fold of domains (`calibtune lodo`'s own deal of the
train domains into `--lodo-folds` folds per seed) and scores every row of the held-out domains
(mean over folds and seeds). That is a cheap stand-in for `calibtune lodo`: the folds share one
draw of questions. `--overrides` are Hydra overrides (the model, the prompt).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np

SPLITS = ("train", "val", "test")
WITHIN_MIN = 10  # rows of each grade a domain needs for the within-domain AUROC (eval's default)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    parser = argparse.ArgumentParser(
        prog="bench_probe_layers.py", description=__doc__.split("\n")[0]
    )
    parser.add_argument("data_dir", type=Path, help="labeled set (train/val/test.jsonl)")
    parser.add_argument("--extra", type=Path, nargs="*", default=[], help="other labeled dirs")
    parser.add_argument("--layers", type=int, nargs="+", default=[18, 21, 24, 27, -1])
    parser.add_argument(
        "--hidden-only", action="store_true", help="the probe without the answer signals"
    )
    parser.add_argument("--lodo-seeds", type=int, nargs="*", default=[0, 1])
    parser.add_argument("--lodo-folds", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--seed", type=int, default=0, help="the probe's fit seed")
    parser.add_argument("--features", type=Path, default=None, help="cache of the passes' outputs")
    parser.add_argument("--out", type=Path, default=None, help="write the figures as JSON")
    parser.add_argument("--overrides", nargs="*", default=[], help="Hydra overrides")
    return parser.parse_args(argv)


def read_sets(args: argparse.Namespace) -> dict[str, list[dict]]:
    """Rows of each split of the labeled set and of each extra dir (its val + test rows)."""
    from calibtune.examples import read_labeled_split

    sets = {split: read_labeled_split(args.data_dir, split) for split in SPLITS}
    for path in args.extra:
        sets[f"extra:{path}"] = [r for s in ("val", "test") for r in read_labeled_split(path, s)]
    return sets


def answer_signals(model, tokenizer, rows: list[dict], batch_size: int) -> np.ndarray:
    """[N, 3] pavg, seqlogp, pmin of each row's response (the probe's answer signals)."""
    from calibtune.models.confidence import encode_query
    from calibtune.models.encoding import answers_stats

    answers = [encode_query(tokenizer, r, with_answer=True).answer for r in rows]
    return answers_stats(model, answers, tokenizer.pad_token_id, batch_size).numpy()


def layer_states(model, tokenizer, rows: list[dict], layers: list[int], batch_size: int):
    """[N, len(layers), H] hidden states at each query's last token, from one pass per batch
    (`models.methods.query_features` keeps one layer; this keeps several from the same pass)."""
    import torch

    from calibtune.models.confidence import encode_query
    from calibtune.models.encoding import last_token_state, length_sorted_batches, pad_sequences

    queries = [encode_query(tokenizer, r).query_ids for r in rows]
    out = np.empty((len(rows), len(layers), model.config.hidden_size), np.float32)
    for batch in length_sorted_batches([len(q) for q in queries], batch_size):
        padded = pad_sequences([queries[i] for i in batch], tokenizer.pad_token_id, side="left")
        with torch.inference_mode():
            states = model(**padded, output_hidden_states=True, logits_to_keep=1).hidden_states
        out[batch] = np.stack([last_token_state(states, k).float().numpy() for k in layers], 1)
    return out


def features(
    args: argparse.Namespace, sets: dict[str, list[dict]]
) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """Each set's hidden states for `args.layers` [N, layers, H] and answer signals [N, 3]: from
    the `--features` cache when it holds these sets and layers, else computed (and cached)."""
    names = sorted(sets)
    if args.features is not None and args.features.is_file():
        cached = np.load(args.features, allow_pickle=False)
        index = json.loads(str(cached["index"]))
        if index == {"sets": names, "layers": args.layers} and "s0" in cached.files:
            states = {name: cached[f"x{i}"] for i, name in enumerate(names)}
            return states, {name: cached[f"s{i}"] for i, name in enumerate(names)}
    from calibtune.config import compose
    from calibtune.models import load_model, load_tokenizer

    cfg = compose("eval", args.overrides)
    model, tokenizer = load_model(cfg.model).eval(), load_tokenizer(cfg.model)
    states = {
        n: layer_states(model, tokenizer, sets[n], args.layers, args.batch_size) for n in names
    }
    signals = {n: answer_signals(model, tokenizer, sets[n], args.batch_size) for n in names}
    if args.features is not None:
        index = json.dumps({"sets": names, "layers": args.layers})
        arrays = {f"x{i}": states[n] for i, n in enumerate(names)}
        arrays.update({f"s{i}": signals[n] for i, n in enumerate(names)})
        np.savez(args.features, index=np.array(index), **arrays)
    return states, signals


def probe_inputs(hidden: np.ndarray, signals: np.ndarray, hidden_only: bool) -> np.ndarray:
    """The default probe's features of one set and layer (`head_inputs`, as the pipeline's)."""
    import torch

    from calibtune.models.probe import head_inputs

    x = head_inputs(torch.from_numpy(hidden), torch.from_numpy(signals), not hidden_only)
    return x.numpy()


def labels(rows: list[dict]) -> np.ndarray:
    return np.array([float(r["correct"]) for r in rows])


def domains(rows: list[dict]) -> np.ndarray:
    return np.array([str(r.get("domain")) for r in rows])


def scores(probability: np.ndarray, rows: list[dict]) -> dict[str, float | None]:
    """ECE (15 bins), AUROC and within-domain AUROC of one set's confidences."""
    from calibtune import metrics

    y = labels(rows)
    within = metrics.auroc_within(probability, y, domains(rows), WITHIN_MIN).value
    return {
        "ece": metrics.ece(probability, y, 15),
        "auroc": metrics.auroc(probability, y),
        "within": within,
    }


def fit(x: np.ndarray, rows: list[dict], seed: int):
    """The default probe on `x` (its strength on the folds probe.strength_folds=auto picks;
    untempered)."""
    from calibtune.models.probe import fit_linear_probe
    from calibtune.train.features import resolve_strength_folds, strength_groups

    groups = strength_groups(rows, resolve_strength_folds(rows, "auto"))
    head, _ = fit_linear_probe(x.astype(np.float64), labels(rows) >= 0.5, groups, seed)
    return head


def lodo_scores(x: dict[str, np.ndarray], sets: dict, args: argparse.Namespace) -> dict:
    """Mean over seeds and folds of the held-out domains' scores, the probe fitted on train
    without them."""
    from calibtune.launch.lodo import domain_folds

    rows = [r for s in SPLITS for r in sets[s]]
    x_all = np.concatenate([x[s] for s in SPLITS])
    train_domains = domains(sets["train"])
    figures = []
    for seed in args.lodo_seeds:
        for held_out in domain_folds(sorted(set(train_domains)), args.lodo_folds, seed):
            keep = ~np.isin(train_domains, held_out)
            kept = [r for r, k in zip(sets["train"], keep, strict=True) if k]
            head = fit(x["train"][keep], kept, args.seed)
            scored = np.isin(domains(rows), held_out)
            probability = head.probability(x_all[scored])
            figures.append(scores(probability, [r for r, s in zip(rows, scored, strict=True) if s]))
    values = {k: [f[k] for f in figures if f[k] is not None] for k in figures[0]}
    return {k: float(np.mean(v)) if v else None for k, v in values.items()}


def layer_figures(layer: int, x: dict[str, np.ndarray], sets: dict, args) -> dict:
    """Every figure of one layer (`x`: each set's states of that layer)."""
    head = fit(x["train"], sets["train"], args.seed)
    out = {name: scores(head.probability(x[name]), sets[name]) for name in sets if name != "train"}
    if args.lodo_seeds:
        out["lodo"] = lodo_scores(x, sets, args)
    return {"layer": layer, **out}


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"


def table(results: list[dict]) -> str:
    """Markdown: one row per layer, ECE / AUROC / within for each set."""
    columns = [k for k in results[0] if k != "layer"]
    head = "| layer | " + " | ".join(f"{c} ECE / AUROC / within" for c in columns) + " |"
    lines = [head, "|---" * (len(columns) + 1) + "|"]
    for r in results:
        cells = [" / ".join(fmt(r[c][m]) for m in ("ece", "auroc", "within")) for c in columns]
        lines.append(f"| {r['layer']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> list[dict]:
    """Extract, fit, print the table; returns the figures per layer."""
    args = parse_args(argv)
    sets = read_sets(args)
    states, signals = features(args, sets)
    results = [
        layer_figures(
            layer,
            {n: probe_inputs(s[:, i], signals[n], args.hidden_only) for n, s in states.items()},
            sets,
            args,
        )
        for i, layer in enumerate(args.layers)
    ]
    print(table(results))
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=2))
    return results


if __name__ == "__main__":
    main()
