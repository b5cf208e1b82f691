"""benchmarks/bench_probe_layers.py on the tiny model: the states it keeps per layer are the ones
the pipeline records for that `model.feature_layer`, each layer gets its own probe and figures
(in distribution, leave-domains-out, extra sets), and the feature cache is reused."""

from __future__ import annotations

import json

import numpy as np
import pytest
from fixtures import load_benchmark, tiny_model_overrides
from fixtures.labeled import labeled_set_signals, write_synthetic_labeled_set

from calibtune.config import compose
from calibtune.models import load_tokenizer

DOMAINS = ("alpha", "beta", "gamma", "delta")


@pytest.fixture(scope="module")
def bench():
    return load_benchmark("bench_probe_layers")


def four_domain_set(directory, cfg, sizes, seed):
    """A synthetic labeled set whose rows are dealt into four domains (lodo needs several)."""
    out = write_synthetic_labeled_set(
        directory, load_tokenizer(cfg.model), cfg.prompt, sizes, seed=seed
    )
    for split in sizes:
        path = out / f"{split}.jsonl"
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        for i, row in enumerate(rows):
            row["domain"] = DOMAINS[i % len(DOMAINS)]
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return out


def test_each_layer_is_scored_on_the_states_the_pipeline_records(
    bench, tiny_model_dir, tmp_path, capsys
):
    overrides = tiny_model_overrides(tiny_model_dir)
    cfg = compose("eval", overrides)
    labeled = four_domain_set(tmp_path / "data", cfg, {"train": 40, "val": 12, "test": 16}, 0)
    extra = four_domain_set(tmp_path / "extra", cfg, {"train": 0, "val": 8, "test": 8}, 5)
    cache = tmp_path / "states.npz"
    argv = [str(labeled), "--extra", str(extra), "--layers", "1", "-1", "--lodo-seeds", "0"]
    argv += ["--lodo-folds", "2", "--features", str(cache), "--overrides", *overrides]
    results = bench.main(argv)
    # the cached last-layer states are what the pipeline records for model.feature_layer=-1
    states = np.load(cache)
    index = json.loads(str(states["index"]))
    assert index["layers"] == [1, -1]
    for layer in (1, -1):  # the states the data stage records with model.feature_layer=layer
        layer_cfg = compose("eval", [*overrides, f"model.feature_layer={layer}"])
        recorded = labeled_set_signals(labeled, layer_cfg, 8)
        test_at = index["sets"].index("test")
        ids = [json.loads(r)["id"] for r in (labeled / "test.jsonl").read_text().splitlines()]
        np.testing.assert_allclose(
            states[f"x{test_at}"][:, index["layers"].index(layer)],
            recorded.select(ids).hidden.numpy(),
            atol=1e-4,
            rtol=1e-4,
        )
        np.testing.assert_allclose(  # the answer signals, as recorded (pavg, seqlogp, pmin)
            states[f"s{test_at}"], recorded.select(ids).stats.numpy(), atol=1e-5, rtol=1e-4
        )
    assert not np.allclose(states[f"x{test_at}"][:, 0], states[f"x{test_at}"][:, 1])
    assert [r["layer"] for r in results] == [1, -1]
    sets = {"val", "test", "lodo", f"extra:{extra}"}
    assert all(set(r) == {"layer", *sets} for r in results)
    for r in results:
        assert all(0 <= r[s]["ece"] <= 1 and 0 <= r[s]["auroc"] <= 1 for s in sets)
    assert results[0]["test"] != results[1]["test"]  # each layer its own probe
    printed = capsys.readouterr().out
    assert "| 1 | " in printed and "| -1 | " in printed
    # a second run reads the cache (no model: a broken model path would fail to load)
    broken = [o for o in overrides if not o.startswith("model.name_or_path=")]
    again = bench.main([*argv[: argv.index("--overrides")], "--overrides", *broken,
                        "model.name_or_path=/nonexistent"])  # fmt: skip
    assert again == results
    hidden_only = bench.main([*argv, "--hidden-only"])  # the probe without the answer signals
    assert [r["layer"] for r in hidden_only] == [1, -1]
    assert hidden_only[0]["test"] != results[0]["test"]
