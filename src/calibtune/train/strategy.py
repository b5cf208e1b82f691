"""How training is spread over processes, and the collective reads and writes that saving and
resuming need under each strategy.

- `ddp` (also one process): accelerate wraps the model in DistributedDataParallel.
- `deepspeed`: launched with a DeepSpeed accelerate config (`ACCELERATE_USE_DEEPSPEED=true`);
  accelerate builds the ZeRO-2 / ZeRO-3 engine, whose config is filled here from `train:`.
- `fsdp2`: the recipe shards the model itself with torch FSDP2 (`fully_shard` per decoder layer,
  then the root, as torchtune's recipes do): the same code on CPU (gloo) and GPU (NCCL), because
  accelerate does not apply FSDP on CPU.

Under every strategy the adapter and the checkpoints hold full (gathered) tensors keyed by
parameter name, so a checkpoint resumes under any strategy and any number of processes."""

from __future__ import annotations

import math
import os
import random
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta

import numpy as np
import torch
from accelerate import Accelerator
from accelerate.utils import DistributedType, InitProcessGroupKwargs, gather_object
from omegaconf import DictConfig

from calibtune.errors import ConfigError

STRATEGIES = ("auto", "ddp", "fsdp2")


def use_deepspeed() -> bool:
    """True when launched with a DeepSpeed accelerate config (or its environment variable)."""
    return os.environ.get("ACCELERATE_USE_DEEPSPEED", "false").lower() == "true"


def mixed_precision(cfg: DictConfig, on_cpu: bool) -> str:
    """`train.mixed_precision`, with `auto` = bf16 on a CUDA GPU that has it, else no."""
    precision = str(cfg.train.mixed_precision)
    if precision == "auto":
        cuda_bf16 = not on_cpu and torch.cuda.is_available() and torch.cuda.is_bf16_supported()
        precision = "bf16" if cuda_bf16 else "no"
    return precision


def make_accelerator(cfg: DictConfig) -> Accelerator:
    """Accelerator on the configured device and precision, with the process-group timeout."""
    name = str(cfg.train.strategy)
    if name not in STRATEGIES:
        raise ConfigError(f"train.strategy={name!r}: choose one of {STRATEGIES}")
    if os.environ.get("ACCELERATE_USE_FSDP", "false").lower() == "true":
        raise ConfigError(
            "an accelerate FSDP config was used: calibtune applies FSDP2 itself; launch with "
            "launch/accelerate/fsdp.yaml (a multi-GPU config) and train.strategy=fsdp2"
        )
    on_cpu = str(cfg.model.device) == "cpu" or not (
        torch.cuda.is_available() or torch.backends.mps.is_available()
    )
    deepspeed = use_deepspeed()
    if deepspeed and name == "fsdp2":
        raise ConfigError("train.strategy=fsdp2 cannot run under a DeepSpeed accelerate config")
    # DeepSpeed on CPU: accelerate would leave the backend unset (one process); gloo spans ranks
    timeout = InitProcessGroupKwargs(
        backend="gloo" if deepspeed and on_cpu else "nccl",
        timeout=timedelta(seconds=int(cfg.train.timeout_s)),
    )
    return Accelerator(
        cpu=on_cpu and not deepspeed,
        mixed_precision=mixed_precision(cfg, on_cpu),
        kwargs_handlers=[timeout],
    )


@dataclass(frozen=True)
class Strategy:
    """The strategy of this run and its gradient accumulation (micro-batches per step)."""

    name: str  # "ddp" | "fsdp2" | "deepspeed"
    accumulation_steps: int
    zero_stage: int = 0

    @property
    def shards_parameters(self) -> bool:
        """True when no process holds every full parameter (FSDP2, ZeRO-3)."""
        return self.name == "fsdp2" or self.zero_stage == 3


def micro_batches_per_step(batch_size: int, world_size: int, micro_batch_size: int) -> int:
    """Micro-batches each process runs per optimizer step (the last one may be smaller)."""
    return math.ceil(batch_size // world_size / micro_batch_size)


def configure(accelerator: Accelerator, cfg: DictConfig) -> Strategy:
    """The run's strategy; sets accelerate's accumulation and fills the DeepSpeed config (micro
    batch, accumulation, clipping; precision comes from the accelerator) from `train:`."""
    tc, world = cfg.train, accelerator.num_processes
    local = int(tc.batch_size) // world
    micro = min(int(tc.micro_batch_size), local)
    steps = micro_batches_per_step(int(tc.batch_size), world, micro)
    accelerator.gradient_accumulation_steps = steps
    if accelerator.distributed_type != DistributedType.DEEPSPEED:
        return Strategy("fsdp2" if str(tc.strategy) == "fsdp2" else "ddp", steps)
    plugin = accelerator.state.deepspeed_plugin
    config = plugin.deepspeed_config
    config["train_micro_batch_size_per_gpu"] = micro
    config["gradient_accumulation_steps"] = steps
    config["train_batch_size"] = micro * steps * world
    config["gradient_clipping"] = float(tc.max_grad_norm or 0.0)
    plugin.gradient_accumulation_steps = steps
    return Strategy("deepspeed", steps, int(config["zero_optimization"]["stage"]))


# ---------------------------------------------------------------------------- FSDP2


def decoder_layers(model: torch.nn.Module) -> list[torch.nn.Module]:
    """The model's transformer blocks (the classes transformers never splits across devices)."""
    no_split = set()
    for module in model.modules():
        no_split |= set(getattr(module, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in no_split]
    if not layers:
        raise ConfigError("train.strategy=fsdp2: the model names no decoder layer class to shard")
    return layers


def shard_fsdp2(
    peft_model: torch.nn.Module, pad_id: int, own_units: Sequence[torch.nn.Module] = ()
) -> None:
    """fully_shard each decoder layer and each of `own_units` (modules called outside the
    model's forward: alora_head's head), then the root; then one forward with the adapter on, so
    FSDP2's lazy initialisation sees the LoRA weights trainable: the first training forward
    (alora's prefix pass, lora's KL reference) runs inside PEFT's disable_adapter(), which
    turns requires_grad off. (torch 2.13 in fp32 trains correctly without it; it guards the
    versions and mixed-precision settings where FSDP2 fixes trainability at that forward.)"""
    from torch.distributed.fsdp import fully_shard

    for layer in [*decoder_layers(peft_model), *own_units]:
        fully_shard(layer)
    fully_shard(peft_model)
    device = next(peft_model.parameters()).device
    with torch.no_grad():
        peft_model(
            input_ids=torch.tensor([[pad_id]], device=device), use_cache=False, logits_to_keep=1
        )


# ---------------------------------------------------------------------------- full tensors


def _inner_optimizer(optimizer) -> torch.optim.Optimizer:
    """The torch optimizer under accelerate's (and DeepSpeed's) wrappers."""
    while hasattr(optimizer, "optimizer"):
        optimizer = optimizer.optimizer
    return optimizer


def trainable_parameters(model: torch.nn.Module) -> dict[str, torch.nn.Parameter]:
    """The parameters that train, by name (of the unwrapped model)."""
    return {name: p for name, p in model.named_parameters() if p.requires_grad}


def describe(strategy: Strategy, model: torch.nn.Module) -> dict:
    """For the manifest: the strategy and whether the trainable parameters really are sharded."""
    from torch.distributed.tensor import DTensor

    params = trainable_parameters(model).values()
    sharded = any(isinstance(p, DTensor) or hasattr(p, "ds_id") for p in params)
    return {"name": strategy.name, "zero_stage": strategy.zero_stage, "sharded": sharded}


def full_shape(param: torch.Tensor) -> tuple[int, ...]:
    """The shape of the whole parameter (a ZeRO-3 parameter holds an empty placeholder)."""
    return tuple(getattr(param, "ds_shape", param.shape))


def _full(value: torch.Tensor) -> torch.Tensor:
    """A DTensor gathered to the whole tensor; anything else as is (detached, on CPU)."""
    from torch.distributed.tensor import DTensor

    if isinstance(value, DTensor):
        value = value.full_tensor()
    return value.detach().contiguous().cpu()


def full_trainable_state(strategy: Strategy, model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Every trainable parameter gathered whole, on CPU. Collective: call on every rank."""
    if strategy.name == "deepspeed":
        from deepspeed.utils import safe_get_full_fp32_param

        return {
            name: safe_get_full_fp32_param(p).detach().contiguous().cpu()
            for name, p in trainable_parameters(model).items()
        }
    return {name: _full(p) for name, p in trainable_parameters(model).items()}


def load_trainable_state(model: torch.nn.Module, tensors: dict[str, torch.Tensor]) -> None:
    """Copy full saved weights into the (not yet sharded) model; names must match exactly."""
    params = trainable_parameters(model)
    if set(params) != set(tensors):
        raise ConfigError("checkpoint weights do not match the model's trainable parameters")
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(tensors[name].to(param.device, param.dtype))


def full_optimizer_state(
    strategy: Strategy, model: torch.nn.Module, optimizer
) -> tuple[dict[str, torch.Tensor], dict]:
    """AdamW state per trainable parameter, gathered whole, as `{key}/{name}` tensors, and the
    param groups' learning rates. Collective: call on every rank."""
    inner = _inner_optimizer(optimizer)
    tensors: dict[str, torch.Tensor] = {}
    params = trainable_parameters(model)
    if strategy.name == "deepspeed":
        from deepspeed.utils import safe_get_full_optimizer_state

        steps = [s["step"] for s in inner.state.values() if "step" in s]
        for name, p in params.items():
            for key in ("exp_avg", "exp_avg_sq"):
                value = safe_get_full_optimizer_state(p, key)
                if value is not None:
                    tensors[f"{key}/{name}"] = value.detach().contiguous().cpu()
            if steps:
                tensors[f"step/{name}"] = torch.as_tensor(steps[0]).float().cpu().clone()
    else:
        for name, p in params.items():
            for key, value in inner.state.get(p, {}).items():
                tensors[f"{key}/{name}"] = _full(torch.as_tensor(value))
    groups = [{"lr": g["lr"], "initial_lr": g.get("initial_lr")} for g in inner.param_groups]
    return tensors, {"param_groups": groups}


def _as_local(full: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """`full` placed like the parameter `like` (sharded the same way when it is a DTensor)."""
    from torch.distributed.tensor import DTensor, distribute_tensor

    if isinstance(like, DTensor):
        full = full.to(like.device_mesh.device_type)
        return distribute_tensor(full, like.device_mesh, like.placements, src_data_rank=None)
    return full.to(like.device)


def load_optimizer_state(
    strategy: Strategy, model: torch.nn.Module, optimizer, tensors: dict, meta: dict
) -> None:
    """Restore what `full_optimizer_state` saved into this run's (possibly sharded) optimizer."""
    inner = _inner_optimizer(optimizer)
    for group, saved in zip(inner.param_groups, meta["param_groups"], strict=True):
        group.update({k: v for k, v in saved.items() if v is not None})
    by_param: dict[str, dict[str, torch.Tensor]] = {}
    for key_name, value in tensors.items():
        key, name = key_name.split("/", 1)
        by_param.setdefault(name, {})[key] = value
    params = trainable_parameters(model)
    if set(by_param) - set(params):
        raise ConfigError("checkpoint optimizer state names parameters this model does not train")
    if strategy.name == "deepspeed":
        _load_deepspeed_optimizer_state(optimizer, inner, params, by_param)
        return
    for name, saved in by_param.items():
        p = params[name]
        inner.state[p] = {
            key: value if key == "step" else _as_local(value, p) for key, value in saved.items()
        }


def _load_deepspeed_optimizer_state(optimizer, inner, params: dict, by_param: dict) -> None:
    """ZeRO: its optimizer keeps state for flat partitions, linked to parameters only after the
    first step; create that state (zeros) and link it when missing, then write each fragment."""
    from deepspeed.utils import safe_set_full_optimizer_state

    zero = optimizer.optimizer
    flats = getattr(zero, "fp32_partitioned_groups_flat", None)  # ZeRO-3
    if flats is None:  # ZeRO-1/2
        flats = zero.single_partition_of_fp32_groups
    for flat in flats:
        state = inner.state[flat]  # a defaultdict: missing entries start empty
        state.setdefault("step", torch.tensor(0.0))
        for key in ("exp_avg", "exp_avg_sq"):
            state.setdefault(key, torch.zeros_like(flat))
    if hasattr(zero, "_lazy_init_hp_params_optimizer_state"):  # ZeRO-1/2 link lazily
        zero._lazy_init_hp_params_optimizer_state()
    step = None
    for name, saved in by_param.items():
        for key in ("exp_avg", "exp_avg_sq"):
            if key not in saved:
                continue
            value = saved[key].to(torch.float32)
            if _smaller_than_its_zero3_partitions(zero, params[name]):
                _set_padded_zero3_state(zero, params[name], value, key)
            else:
                safe_set_full_optimizer_state(params[name], value, key)
        step = saved.get("step", step)
    if step is not None:
        for state in inner.state.values():
            state["step"] = torch.as_tensor(step).clone().to(torch.float32)


def _smaller_than_its_zero3_partitions(zero, param: torch.Tensor) -> bool:
    """A ZeRO-3 parameter with fewer elements than its padded partitions hold (alora_head's
    one-element bias over two ranks), which DeepSpeed's `safe_set_full_optimizer_state` cannot
    write (it slices past the end)."""
    if not hasattr(param, "ds_numel") or not hasattr(zero, "_get_fp32_opt_state_partition"):
        return False
    return param.ds_numel < param.partition_numel() * param.ds_process_group.size()


def _set_padded_zero3_state(zero, param: torch.Tensor, value: torch.Tensor, key: str) -> None:
    """Write this rank's slice of a full optimizer state `value` into a padded ZeRO-3 partition
    (the padding zero), through the same DeepSpeed internals its own setter uses."""
    partition, _ = zero._get_fp32_opt_state_partition(param, False, optim_state_key=key)
    start = partition.numel() * zero._get_param_partition_rank(param)
    piece = value.flatten()[start : start + partition.numel()]
    partition.data.zero_()
    partition.data[: piece.numel()].copy_(piece)


def clip_gradients(
    accelerator: Accelerator, strategy: Strategy, model: torch.nn.Module, max_norm: float | None
) -> float | None:
    """Clip the trainable gradients to `max_norm` (DeepSpeed clips inside its step from its
    config); returns the norm before clipping."""
    if strategy.name == "deepspeed":
        norm = accelerator.clip_grad_norm_(list(trainable_parameters(model).values()), max_norm)
        return None if norm is None else float(norm)
    if not max_norm:
        return None
    params = list(trainable_parameters(model).values())
    norm = accelerator.clip_grad_norm_(params, max_norm)
    return float(_full(torch.as_tensor(norm)) if not isinstance(norm, float) else norm)


# ---------------------------------------------------------------------------- RNG


def rng_state() -> tuple[dict[str, torch.Tensor], dict]:
    """This process's RNG states: torch (and cuda) as tensors, python and numpy as JSON."""
    tensors = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, s in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"cuda.{i}"] = s
    version, internal, gauss = random.getstate()
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    meta = {
        "python": [version, list(internal), gauss],
        "numpy": [kind, keys.tolist(), pos, has_gauss, cached],
    }
    return tensors, meta


def set_rng_state(tensors: dict, meta: dict) -> None:
    """Restore the states saved by `rng_state`."""
    torch.set_rng_state(tensors["torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    version, internal, gauss = meta["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, pos, has_gauss, cached = meta["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), pos, has_gauss, cached))


def every_rank_rng(world_size: int) -> list[tuple[dict, dict]]:
    """Every process's RNG states, in rank order. Collective when world_size > 1."""
    mine = [rng_state()]
    return gather_object(mine) if world_size > 1 else mine
