"""Every launch strategy on 2 CPU processes (torchrun + gloo) against one process on the same
global batch: {DDP, FSDP2, DeepSpeed ZeRO-2, ZeRO-3} x {alora, alora_head, lora with KL}, and
probe under DDP. Each case trains 4 steps, saves an adapter whose tensors all have their full shapes and
match the 1-process adapter, and resumes from the step-2 checkpoint to the same final adapter.

One torchrun launch per strategy runs all its methods (full run + resumed run each); the
1-process reference of each method is trained once per module."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from fixtures import TINY_FEATURE_LAYER
from fixtures.distributed import torchrun
from fixtures.labeled import record_labeled_set_signals, write_synthetic_labeled_set
from run_strategy import method_overrides  # tests/distributed/run_strategy.py, the driver
from safetensors.torch import load_file

from calibtune.config import compose
from calibtune.models import load_tokenizer
from calibtune.tracking import read_metrics
from calibtune.train.recipe import run_train_stage

pytestmark = pytest.mark.distributed
DRIVER = Path(__file__).with_name("run_strategy.py")
ADAPTER = "adapter_model.safetensors"
DEEPSPEED_CPU = {"ACCELERATE_USE_DEEPSPEED": "true", "DS_ACCELERATOR": "cpu"}
LORAS = ("alora", "alora_head", "lora")
STRATEGIES = {  # name: (environment, overrides, methods)
    "ddp": ({}, [], ("alora", "alora_head", "lora", "probe")),
    "fsdp2": ({}, ["train.strategy=fsdp2"], ("alora", "alora_head", "lora")),
    "zero2": ({**DEEPSPEED_CPU, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "2"}, [], LORAS),
    "zero3": ({**DEEPSPEED_CPU, "ACCELERATE_DEEPSPEED_ZERO_STAGE": "3"}, [], LORAS),
}
# max |2 processes - 1 process| over the adapter's entries (fp32; measured on CPU: see docs)
TOLERANCE = {"ddp": 1e-5, "fsdp2": 1e-5, "zero2": 1e-5, "zero3": 1e-5}
DISTRIBUTED_TYPE = {
    "ddp": "MULTI_CPU",
    "fsdp2": "MULTI_CPU",
    "zero2": "DEEPSPEED",
    "zero3": "DEEPSPEED",
}
CASES = [(name, method) for name, (_, _, methods) in STRATEGIES.items() for method in methods]
WEIGHTS = {"probe": ["probe.safetensors"], "alora_head": [ADAPTER, "probe.safetensors"]}


@pytest.fixture(scope="module")
def common(tiny_model_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> list[str]:
    """Overrides every run shares: tiny model, a labeled set (with the base signals alora_head's
    warm start reads), 4 steps of global batch 4, checkpoints at step 2, validation only at the
    end (alora_head: and at step 0, the probe, which it keeps when the end does not beat it)."""
    base = [
        f"model.name_or_path={tiny_model_dir}",
        TINY_FEATURE_LAYER,
        "model.device=cpu",
        "model.dtype=float32",
        "model.attn_implementation=eager",
        "logger=none",
    ]
    labeled = write_synthetic_labeled_set(
        tmp_path_factory.mktemp("labeled"),
        load_tokenizer(compose("train", base).model),
        compose("train", base).prompt,
        {"train": 16, "val": 7, "test": 2},
    )
    record_labeled_set_signals(labeled, compose("train", base))
    return [
        *base,
        f"train.data_dir={labeled}",
        "train.batch_size=4",
        "train.micro_batch_size=1",
        "train.epochs=1",
        "train.log_every=1",
        "train.eval_every=0",
        "train.eval_at_start=false",
        "train.checkpoint_every=2",
        "train.progress=false",
        "lora.lora_dropout=0.0",
        "optim.lr=5e-3",
    ]


@pytest.fixture(scope="module")
def reference(common: list[str], tmp_path_factory: pytest.TempPathFactory):
    """reference(method) -> the train output dir of a 1-process run (trained once)."""
    root, done = tmp_path_factory.mktemp("one-process"), {}

    def get(method: str) -> Path:
        if method not in done:
            overrides = [*method_overrides(common, method), f"method={method}"]
            cfg = compose("train", [*overrides, f"run_dir={root / method}"])
            done[method] = run_train_stage(cfg)
        return done[method]

    return get


@pytest.fixture(scope="module")
def launched(common: list[str], tmp_path_factory: pytest.TempPathFactory):
    """launched(strategy) -> the output root of one 2-process torchrun of all its methods."""
    done = {}

    def get(name: str) -> Path:
        if name not in done:
            env, overrides, methods = STRATEGIES[name]
            out = tmp_path_factory.mktemp(name)
            spec = out / "spec.json"
            spec.write_text(
                json.dumps(
                    {
                        "out": str(out),
                        "methods": list(methods),
                        "overrides": [*common, *overrides],
                        "checkpoint_step": 2,
                    }
                )
            )

            def clear() -> None:
                for method in methods:
                    shutil.rmtree(out / method, ignore_errors=True)

            torchrun(2, [str(DRIVER), str(spec)], env, out, before_retry=clear)
            done[name] = out
        return done[name]

    return get


def adapter(train_dir: Path, method: str) -> dict[str, torch.Tensor]:
    """Every saved tensor of the kept adapter dir, keyed file/name."""
    files = WEIGHTS.get(method, [ADAPTER])
    return {f"{f}/{k}": v for f in files for k, v in load_file(train_dir / "adapter" / f).items()}


def losses(train_dir: Path) -> torch.Tensor:
    return torch.tensor([r["train/loss"] for r in read_metrics(train_dir) if "train/loss" in r])


@pytest.mark.parametrize(("strategy", "method"), CASES)
def test_two_processes_match_one_and_resume(strategy, method, reference, launched):
    one = reference(method)
    full = launched(strategy) / method / "full" / "train"
    resumed = launched(strategy) / method / "resumed" / "train"
    manifest = json.loads((full / "manifest.json").read_text())
    assert manifest["world_size"] == 2
    best_step = manifest["best"]["step"]
    assert best_step == json.loads((one / "manifest.json").read_text())["best"]["step"]
    if method != "probe":
        assert manifest["distributed_type"].endswith(DISTRIBUTED_TYPE[strategy])
        assert manifest["strategy"]["sharded"] == (strategy in ("fsdp2", "zero3"))

    want, got = adapter(one, method), adapter(full, method)
    assert want.keys() == got.keys()
    assert {k: v.shape for k, v in got.items()} == {k: v.shape for k, v in want.items()}
    if method != "probe":
        rank = json.loads((full / "adapter/adapter_config.json").read_text())["r"]
        assert all(v.shape[0] == rank for k, v in got.items() if "lora_A" in k)
        trained = best_step > 0  # alora_head keeps step 0 (the probe: B = 0) when it wins on val
        assert all(bool(v.abs().sum() > 0) == trained for k, v in got.items() if "lora_B" in k)
    diff = max(float((want[k] - got[k]).abs().max()) for k in want)
    print(f"{strategy}/{method}: max |2 procs - 1 proc| = {diff:.2e}")
    assert diff <= TOLERANCE[strategy], diff
    assert torch.allclose(losses(one), losses(full), atol=TOLERANCE[strategy] * 10)

    checkpoint = load_file(one / "checkpoints/step_2/trainable.safetensors")
    sharded_run = load_file(full / "checkpoints/step_2/trainable.safetensors")
    assert {k: v.shape for k, v in sharded_run.items()} == {
        k: v.shape for k, v in checkpoint.items()
    }
    step_2 = max(float((checkpoint[k] - sharded_run[k]).abs().max()) for k in checkpoint)
    assert step_2 <= TOLERANCE[strategy], step_2  # the trained weights after 2 steps, too
    again = adapter(resumed, method)
    assert all(torch.equal(again[k], got[k]) for k in got), "resume changed the final adapter"
    assert losses(resumed).tolist() == losses(full).tolist()[2:]  # steps 3 and 4
