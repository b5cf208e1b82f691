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
from calibtune.models.probe import PROBE_WEIGHTS, ProbeHead, write_probe_files
from calibtune.train.checkpoint import verify_saved_tensors

ADAPTER_WEIGHTS = "adapter_model.safetensors"
HEAD_MODULE = "confidence_head"  # the head's name as a submodule of the PEFT model (alora_head)


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


def layers_under_head(model: torch.nn.Module, feature_layer: int, lora_node) -> list[int] | None:
    """The decoder layers a LoRA trained beside a head (method=alora_head) may act on: those
    below the hidden state the head reads (`model.feature_layer`); a layer above it would get no
    gradient (DDP refuses such parameters). None: every layer (the head reads the last)."""
    count = int(model.config.num_hidden_layers)
    index = feature_layer % (count + 1)  # hidden states: the embeddings, then one per layer
    if index == count:
        return None  # lora.layers_to_transform as configured
    if index == 0:
        raise ConfigError(
            "model.feature_layer reads the embeddings: method=alora_head's LoRA would act on "
            "no layer before them; choose a later model.feature_layer"
        )
    configured = lora_node.get("layers_to_transform")
    if configured is None:
        return list(range(index))
    configured = [configured] if isinstance(configured, int) else list(configured)
    above = [i for i in configured if i >= index]
    if above:
        raise ConfigError(
            f"lora.layers_to_transform {above} act after the hidden state the head reads "
            f"(model.feature_layer={feature_layer}: after layer {index - 1}), so they would "
            f"get no gradient: keep layers below {index}"
        )
    return configured


def attach_lora(
    model: torch.nn.Module,
    lora_node,
    alora_invocation_tokens: Sequence[int] | None = None,
    layers: list[int] | None = None,
) -> PeftModel:
    """Wrap `model` in a PEFT LoRA model from the `lora:` config (base weights frozen). With
    `alora_invocation_tokens` it is an activated LoRA (aLoRA): the adapter acts only from the
    last occurrence of those tokens on, so everything before them runs as the base model.
    `layers`: the decoder layers it acts on, in place of `lora.layers_to_transform`."""
    lora_cfg = instantiate(lora_node, _convert_="all")
    if layers is not None:
        lora_cfg.layers_to_transform = layers
    if alora_invocation_tokens is not None:
        lora_cfg.alora_invocation_tokens = list(alora_invocation_tokens)
        lora_cfg.task_type = "CAUSAL_LM"  # PEFT activates an aLoRA only in its causal-LM model
    check_lora_targets(model, lora_cfg)
    return get_peft_model(model, lora_cfg)


def attach_head(peft_model: PeftModel, head: ProbeHead) -> None:
    """Make `head` a trainable submodule of the PEFT model (method=alora_head), so every
    strategy wraps, shards, clips, checkpoints and gathers it with the LoRA weights. PEFT's own
    save keeps only the LoRA tensors; `save_adapter` writes the head beside them."""
    head.requires_grad_(True)
    peft_model.add_module(HEAD_MODULE, head)


def head_of(peft_model: PeftModel) -> ProbeHead | None:
    """The head attached by `attach_head`, else None."""
    return peft_model._modules.get(HEAD_MODULE)


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
    `out_dir`. With `alora_invocation_tokens` the saved config is an activated LoRA's; a head
    (`attach_head`) is saved beside it as probe files (`calibtune.models.probe`)."""
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
            if head_of(peft_model) is not None:
                save_head(peft_model, tmp, full_state)
    finally:
        config.alora_invocation_tokens, config.task_type = saved
    return out_dir


def save_head(
    peft_model: PeftModel, out_dir: Path, full_state: dict[str, torch.Tensor] | None
) -> None:
    """The attached head's whole tensors (from `full_state` when given: it may be sharded) as
    probe files in `out_dir`, verified."""
    head = head_of(peft_model)
    prefix = f"{HEAD_MODULE}."
    if full_state is not None:
        state = {k.removeprefix(prefix): v for k, v in full_state.items() if k.startswith(prefix)}
        head = ProbeHead(head.in_features, head.hidden, layer=head.layer)
        head.load_state_dict(state)
    extra = {"feature": "last_hidden_state_with_alora", "fit": "alora_head"}
    verify_saved_tensors(out_dir / PROBE_WEIGHTS, write_probe_files(head, out_dir, extra))
