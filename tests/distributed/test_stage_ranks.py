"""The data and eval stages on 2 CPU processes (torchrun + gloo) write exactly what one
process writes: the same labeled-set bytes, the same metrics.json (every float bitwise)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from fixtures.adapters import write_stage_adapter
from fixtures.distributed import torchrun

from calibtune.data.stage import run_data_stage
from calibtune.examples import SPLITS
from calibtune.io import read_jsonl, write_jsonl_atomic

pytestmark = pytest.mark.distributed
REPO = Path(__file__).resolve().parents[2]
DATA = [
    "data.n_examples=40",
    "data.val_size=8",
    "data.test_size=16",
    "data.batch_size=4",
    "data.batches_per_chunk=1",
    "data.max_new_tokens=4",
    "data.progress=false",
]
EVAL = [
    "eval.n_boot=50",
    "eval.batch_size=4",
    "eval.verbalized.max_examples=6",
    "eval.verbalized.max_new_tokens=4",
    "eval.agreement_max_examples=8",
    "eval.token_temperature.steps=3",
    "eval.progress=false",
]


def test_data_and_eval_stages_on_two_processes_match_one(compose_cfg, tiny_overrides, tmp_path):
    common = [o for o in tiny_overrides if not o.startswith("run_dir=")]
    one = run_data_stage(compose_cfg("data", [*DATA, f"data.output_dir={tmp_path}/data-1"]))
    two = tmp_path / "data-2"
    torchrun(
        2,
        [str(REPO / "data/build_dataset.py"), *common, *DATA, f"data.output_dir={two}"],
        {},
        tmp_path,
    )
    for split in SPLITS:
        assert (two / f"{split}.jsonl").read_bytes() == (one / f"{split}.jsonl").read_bytes()

    adapter = write_stage_adapter(tmp_path / "train", compose_cfg("eval"))
    inputs = [*EVAL, f"eval.data_dir={one}", f"eval.adapter={adapter}", *DATA]
    script = str(REPO / "eval/run_eval.py")
    single, double = tmp_path / "eval-1", tmp_path / "eval-2"
    # both through torchrun: the same thread count, so the same float reduction order
    torchrun(1, [script, *common, *inputs, f"eval.output_dir={single}"], {}, tmp_path)
    torchrun(2, [script, *common, *inputs, f"eval.output_dir={double}"], {}, tmp_path)
    # bitwise: the entry script asks MKL for reproducible math (calibtune.runtime); without it one
    # test example's base ptrue moved by 6e-8 when computed on the second rank
    want = json.loads((single / "metrics.json").read_text())
    got = json.loads((double / "metrics.json").read_text())
    assert got == want
    assert want["tuning_cost"]["n"] == 8 and want["verbalized"]["n_asked"] == 6

    # a raw QA file: answered and graded in chunks shared over the ranks, the same as 1 process
    qa = tmp_path / "qa.jsonl"
    keys = ("question", "answers", "domain", "grader", "group")
    rows = [row for split in SPLITS for row in read_jsonl(one / f"{split}.jsonl")]
    write_jsonl_atomic(qa, [{k: row[k] for k in keys} for row in rows])
    raw = [*EVAL, f"eval.data_dir={qa}", f"eval.adapter={adapter}", *DATA]
    torchrun(1, [script, *common, *raw, f"eval.output_dir={single}-qa"], {}, tmp_path)
    torchrun(2, [script, *common, *raw, f"eval.output_dir={double}-qa"], {}, tmp_path)
    for name in ("labeled/val.jsonl", "labeled/test.jsonl", "metrics.json"):
        want_bytes = Path(f"{single}-qa", name).read_bytes()
        assert Path(f"{double}-qa", name).read_bytes() == want_bytes, name
    assert len(read_jsonl(Path(f"{single}-qa", "labeled/test.jsonl"))) > 0
