"""The trainable part: LoRA attached with PEFT (target modules checked against the model), and
the adapter saved with PEFT's `save_pretrained`, verified after every save."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import torch
from hydra.utils import instantiate
from peft import LoraConfig, PeftModel, get_peft_model
from peft.tuners.lora import LoraLayer

from calibtune.errors import ConfigError
from calibtune.io import atomic_dir
from calibtune.train.checkpoint import verify_saved_tensors

ADAPTER_WEIGHTS = "adapter_model.safetensors"


def linear_module_names(model: torch.nn.Module) -> list[str]:
    """Short names of the model's linear layers (what LoRA target_modules match)."""
    return sorted(
        {
            name.rsplit(".", 1)[-1]
            for name, m in model.named_modules()
            if isinstance(m, torch.nn.Linear)
        }
    )


def check_lora_targets(model: torch.nn.Module, lora_cfg: LoraConfig) -> None:
    """Fail, listing what the model has, when a LoRA target module is not in the model."""
    targets = lora_cfg.target_modules
    if isinstance(targets, str) or targets is None:
        return
    present = {name.rsplit(".", 1)[-1] for name, _ in model.named_modules()}
    missing = sorted(set(targets) - present)
    if missing:
        raise ConfigError(
            f"lora.target_modules {missing} are not modules of this model; its linear layers are "
            f"{linear_module_names(model)}: set lora.target_modules to some of those"
        )
    num_layers = getattr(model.config, "num_hidden_layers", None)
    layers = lora_cfg.layers_to_transform
    if num_layers is not None and layers is not None:
        layers = [layers] if isinstance(layers, int) else list(layers)
        bad = [i for i in layers if not 0 <= i < num_layers]
        if bad:
            raise ConfigError(
                f"lora.layers_to_transform {bad} out of range: the model has {num_layers} layers"
            )


def attach_lora(
    model: torch.nn.Module, lora_node, alora_invocation_tokens: Sequence[int] | None = None
) -> PeftModel:
    """Wrap `model` in a PEFT LoRA model from the `lora:` config (base weights frozen). With
    `alora_invocation_tokens` it is an activated LoRA (aLoRA): the adapter acts only from the
    last occurrence of those tokens on, so everything before them runs as the base model."""
    lora_cfg = instantiate(lora_node, _convert_="all")
    if alora_invocation_tokens is not None:
        lora_cfg.alora_invocation_tokens = list(alora_invocation_tokens)
        lora_cfg.task_type = "CAUSAL_LM"  # PEFT activates an aLoRA only in its causal-LM model
    check_lora_targets(model, lora_cfg)
    return get_peft_model(model, lora_cfg)


def expected_adapter_shapes(peft_model: PeftModel, adapter: str = "default") -> dict:
    """Name -> full shape of every tensor PEFT saves for this LoRA, from each LoRA layer's
    rank and its base layer's in/out features (never from the possibly sharded tensors)."""
    shapes = {}
    for name, module in peft_model.named_modules():
        if isinstance(module, LoraLayer) and adapter in module.lora_A:
            rank = module.r[adapter]
            shapes[f"{name}.lora_A.weight"] = (rank, module.in_features)
            shapes[f"{name}.lora_B.weight"] = (module.out_features, rank)
    return shapes


def save_adapter(
    peft_model: PeftModel,
    out_dir: Path,
    alora_invocation_tokens: Sequence[int] | None = None,
    full_state: dict[str, torch.Tensor] | None = None,
) -> Path:
    """PEFT `save_pretrained` of the gathered trainable tensors `full_state` (default: the
    model's own, unsharded) into a temp dir, check every tensor's shape, then move it to
    `out_dir`. With `alora_invocation_tokens` the saved config is an activated LoRA's."""
    out_dir = Path(out_dir)
    config = peft_model.peft_config["default"]
    saved = (config.alora_invocation_tokens, config.task_type)
    try:
        if alora_invocation_tokens is not None:
            config.alora_invocation_tokens = list(alora_invocation_tokens)
            config.task_type = "CAUSAL_LM"
        with atomic_dir(out_dir) as tmp:
            peft_model.save_pretrained(tmp, safe_serialization=True, state_dict=full_state)
            verify_saved_tensors(tmp / ADAPTER_WEIGHTS, expected_adapter_shapes(peft_model))
    finally:
        config.alora_invocation_tokens, config.task_type = saved
    return out_dir
