"""The LoRA recipe (method=lora, alora and alora_head): setup, train loop, validation,
checkpoints, cleanup. The train stage's entry (`calibtune.train.recipe.run_train_stage`) runs
it for the methods it is registered for.

    calibtune train method=lora [overrides]
    accelerate launch --config_file launch/accelerate/<x>.yaml train/calibrate.py method=alora ...
    torchrun --nproc_per_node 2 train/calibrate.py model.device=cpu method=alora [overrides]

Reads a labeled set (cfg.train.data_dir), trains a LoRA adapter (cfg.lora) with CE on the
uncertainty query + beta * KL(base || tuned) on the answer tokens, validates every `eval_every`
steps and keeps the best adapter by `best_metric`. Only rank 0 writes. An `activated` method
(method=alora) trains an activated LoRA: the adapter acts only on the follow-up query's tokens,
so the answers are the base model's by construction (no KL term needed). An `adapter_head`
method (method=alora_head) also trains a linear head on the query's hidden state
(model.feature_layer; its LoRA acts on the layers below it only): it starts as the linear probe
fitted on train (LoRA B starts at zero), so step 0 is the probe, and
step 0 is always validated, so the kept adapter is never worse than the probe on val.
"""

from __future__ import annotations

import contextlib
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import torch
from accelerate import Accelerator
from accelerate.utils import broadcast_object_list, gather_object
from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm
from transformers import PreTrainedTokenizerBase

from calibtune.config import save_config
from calibtune.errors import ConfigError
from calibtune.examples import MANIFEST
from calibtune.io import sha256_file, write_json_atomic
from calibtune.models.confidence import (
    QueryModel,
    QueryTokens,
    common_suffix_ids,
    query_tokens_of,
    query_two_way_logits,
)
from calibtune.models.loading import load_model, load_tokenizer, model_fingerprint
from calibtune.models.methods import QueryMethod, method_named
from calibtune.models.probe import ProbeHead
from calibtune.runtime import provenance, set_seed
from calibtune.tracking import Tracker
from calibtune.train import checkpoint as ckpt
from calibtune.train import preemption
from calibtune.train import strategy as dist
from calibtune.train.common import (
    check_train_config,
    checkpoint_or_stop,
    epoch_seed,
    gather_snapshot,
    is_better,
    make_optimizer,
    rank_share,
    read_training_data,
    restore_snapshot,
    shared_output_dir,
    total_steps,
)
from calibtune.train.data import (
    TrainExample,
    collate,
    count_tokens,
    plan_batches,
    shard_and_split,
    to_device,
    tokenize_examples,
)
from calibtune.train.features import (
    fit_probe,
    recorded_features,
    recorded_signals,
    resolve_strength_folds,
    strength_groups,
)
from calibtune.train.methods import (
    attach_head,
    attach_lora,
    head_of,
    layers_under_head,
    save_adapter,
)
from calibtune.train.steps import micro_step_loss, validation_metrics

log = logging.getLogger(__name__)


@dataclass
class TrainResult:
    """What a training run leaves behind (the model is the final one, not necessarily the best;
    for method=alora its adapter acts on every token: the saved adapter/ is the activated LoRA)."""

    output_dir: Path
    model: torch.nn.Module
    tokenizer: PreTrainedTokenizerBase
    state: ckpt.TrainState


def run_lora(cfg: DictConfig) -> Path:
    """Train on cfg.train.data_dir and return cfg.train.output_dir (adapter/, manifest, ...)."""
    with preemption.stop_on_signals():  # SIGUSR1/SIGTERM: checkpoint at the next step, exit 75
        return train_lora(cfg).output_dir


# ---------------------------------------------------------------------------- setup


def alora_invocation(
    cfg: DictConfig, method: QueryMethod, examples: list[TrainExample]
) -> tuple[int, ...] | None:
    """An `activated` method (method=alora): the query suffix all examples share (the adapter's
    invocation tokens); else None."""
    if not method.activated:
        return None
    suffix = common_suffix_ids(examples)
    if suffix is None:
        raise ConfigError(
            f"method=alora needs follow-up queries that all end in the same suffix, and the "
            f"labeled set in {cfg.train.data_dir} has other queries: rebuild it with "
            "prompt.query_style=followup, or train with method=lora"
        )
    return suffix


def warm_start_head(
    cfg: DictConfig, accelerator: Accelerator, train_rows: list[dict]
) -> tuple[ProbeHead, dict]:
    """The linear probe fitted on train's recorded hidden states (method=probe's fit with its
    default folds, probe.strength_folds=auto; on rank 0, sent to every rank): the starting head
    of an `adapter_head` method, and what the manifest records of the fit."""
    recorded = recorded_signals(cfg, train_rows)
    if recorded is None:
        raise ConfigError(
            f"method=alora_head starts its head from the linear probe on the base model's "
            f"recorded hidden states, and {cfg.train.data_dir} has none for these rows: rebuild "
            "the labeled set with data.base_signals=true (the default)"
        )
    fitted = [None]
    if accelerator.is_main_process:
        folds = resolve_strength_folds(train_rows, "auto")  # as method=probe's default
        groups = strength_groups(train_rows, folds)
        features = recorded_features(recorded, train_rows, answer_signals=False)  # hidden only
        head, strength = fit_probe(features, groups, int(cfg.seed), int(cfg.model.feature_layer))
        fitted = [(head.state_dict(), head.in_features, strength, folds)]
    if accelerator.num_processes > 1:
        broadcast_object_list(fitted, from_process=0)
    state, in_features, strength, folds = fitted[0]
    head = ProbeHead(in_features, layer=int(cfg.model.feature_layer))
    head.load_state_dict(state)
    fit = {"from": "linear probe", "inverse_l2_strength": strength, "strength_folds": folds}
    fit["train_rows"] = len(train_rows)
    return head.to(accelerator.device), fit


# ---------------------------------------------------------------------------- validation


def validation_logits(
    accelerator: Accelerator,
    model: torch.nn.Module,
    peft_model: torch.nn.Module,
    val_examples: list[TrainExample],
    tokens: QueryTokens,
    pad_id: int,
    batch_size: int,
    method: QueryMethod,
) -> torch.Tensor:
    """Two-way query logits [N, 2] of the tuned model on val (the shared confidence passes),
    each process scoring an equal share of the examples, gathered in example order."""
    was_training = model.training
    model.eval()
    mine = rank_share(len(val_examples), accelerator.process_index, accelerator.num_processes)
    qm = QueryModel.training(model, peft_model, method, head_of(peft_model))
    with accelerator.autocast():
        logits = query_two_way_logits(
            qm,
            [val_examples[i] for i in mine],
            tokens,
            pad_id,
            batch_size,
            device=accelerator.device,
        )
    rows = [(i, logits[k].tolist()) for k, i in enumerate(mine)]
    if accelerator.num_processes > 1:
        rows = gather_object(rows)
    rows = sorted(dict(rows).items())  # padded shares repeat an example: keep it once
    model.train(was_training)
    return torch.tensor([r[1] for r in rows])


@dataclass(frozen=True)
class StepContext:
    """What every optimizer step needs besides the model and optimizer."""

    examples: list[TrainExample]
    tokens: QueryTokens
    pad_id: int
    with_answers: bool
    method: QueryMethod
    beta: float
    local_batch: int
    max_grad_norm: float | None
    strategy: dist.Strategy
    head: torch.nn.Module | None = None


def train_one_batch(
    accelerator: Accelerator,
    model: torch.nn.Module,
    peft_model: torch.nn.Module,
    optimizer,
    scheduler,
    micro_batches: list[list[int]],
    run: StepContext,
) -> tuple[torch.Tensor, float | None, int]:
    """One optimizer step over this process's micro-batches, accumulated by accelerate (which
    syncs gradients, and under DeepSpeed steps the engine, on the last one). Returns the summed
    [loss, ce, kl] terms, the gradient norm and the tokens processed."""
    steps = run.strategy.accumulation_steps
    if len(micro_batches) != steps:
        raise RuntimeError(f"{len(micro_batches)} micro-batches, accumulation expects {steps}")
    # accelerate and DeepSpeed divide each micro-batch loss by `steps`; the loss sums examples
    normalizer = run.local_batch / steps
    loss_sum = torch.zeros(3, device=accelerator.device)
    num_tokens = 0
    for indices in micro_batches:
        batch = collate([run.examples[i] for i in indices], run.pad_id, run.with_answers)
        num_tokens += count_tokens(batch)
        batch = to_device(batch, accelerator.device)
        with accelerator.accumulate(model), accelerator.autocast():
            terms = micro_step_loss(
                model,
                peft_model,
                batch,
                run.tokens,
                run.beta,
                normalizer,
                run.method.activated,
                run.head,
            )
            accelerator.backward(terms.total)
        loss_sum += torch.stack([terms.total, terms.ce, terms.kl]).detach() / steps
    grad_norm = dist.clip_gradients(accelerator, run.strategy, peft_model, run.max_grad_norm)
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return loss_sum, grad_norm, num_tokens


# ---------------------------------------------------------------------------- the run


def prepare_model(
    accelerator: Accelerator,
    strategy: dist.Strategy,
    cfg: DictConfig,
    output_dir: Path,
    steps: int,
    pad_id: int,
    head: ProbeHead | None = None,
):
    """Load the model on this rank's device, attach LoRA (and `head`), load resume weights,
    shard (FSDP2) or wrap (DDP, DeepSpeed). Returns (model, peft_model, optimizer, scheduler,
    snapshot)."""
    tc = cfg.train
    # a hub download happens once; ZeRO-3 partitions while loading, a collective on all ranks
    zero3 = strategy.zero_stage == 3
    with contextlib.nullcontext() if zero3 else accelerator.main_process_first():
        model = load_model(cfg.model, device=accelerator.device)
    if tc.gradient_checkpointing:
        model.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    layers = None
    if head is not None:  # only the layers below the hidden state the head reads
        layers = layers_under_head(model, head.layer, cfg.lora)
    peft_model = attach_lora(model, cfg.lora, layers=layers)  # alora: a plain LoRA, see steps.py
    if head is not None:
        attach_head(peft_model, head)
    resume_from = ckpt.find_resume_checkpoint(cfg, output_dir)
    snapshot = ckpt.load_checkpoint(resume_from) if resume_from is not None else None
    if snapshot is not None:
        dist.load_trainable_state(peft_model, snapshot.trainable)
        log.info("resuming from %s (step %d)", resume_from, snapshot.train.step)
    if strategy.name == "fsdp2":
        dist.shard_fsdp2(peft_model, pad_id, own_units=[head] if head is not None else [])
    peft_model.train()
    optimizer, scheduler = make_optimizer(cfg, peft_model, steps)
    if strategy.name == "fsdp2":
        return peft_model, peft_model, accelerator.prepare(optimizer), scheduler, snapshot
    model, optimizer = accelerator.prepare(peft_model, optimizer)
    return model, peft_model, optimizer, scheduler, snapshot


def train_lora(cfg: DictConfig) -> TrainResult:
    """Setup, train loop with validation and checkpoints, final outputs. Returns the result."""
    tc = cfg.train
    accelerator = dist.make_accelerator(cfg)
    rank0 = accelerator.is_main_process
    output_dir = shared_output_dir(accelerator, tc.output_dir)

    # --- setup: everything that can fail on bad input fails here, before any output is written
    train_rows, val_rows = read_training_data(cfg)
    check_train_config(cfg, len(train_rows), accelerator.num_processes)
    strategy = dist.configure(accelerator, cfg)
    tokenizer = load_tokenizer(cfg.model)
    tokens = query_tokens_of(tokenizer, cfg.prompt)
    train_examples = tokenize_examples(tokenizer, train_rows, with_answers=float(tc.beta) > 0)
    val_examples = tokenize_examples(tokenizer, val_rows, with_answers=False)
    method = method_named(cfg.method.name)
    invocation = alora_invocation(cfg, method, train_examples + val_examples)
    with_answers = float(tc.beta) > 0 and invocation is None
    lengths = [e.num_tokens for e in train_examples]
    steps_per_epoch = len(train_rows) // int(tc.batch_size)
    steps = total_steps(cfg, steps_per_epoch)
    pad_id = tokenizer.pad_token_id

    head, head_fit = None, None
    if method.adapter_head:
        head, head_fit = warm_start_head(cfg, accelerator, train_rows)

    set_seed(int(cfg.seed))
    model, peft_model, optimizer, scheduler, snapshot = prepare_model(
        accelerator, strategy, cfg, output_dir, steps, pad_id, head
    )
    state = ckpt.TrainState()
    if snapshot is not None:
        state = restore_snapshot(accelerator, strategy, peft_model, optimizer, scheduler, snapshot)

    tracker = Tracker(output_dir if rank0 else None, cfg.logger if rank0 else None, cfg)
    if rank0:
        save_config(cfg, output_dir / "config.yaml")
        if snapshot is not None:
            tracker.drop_after(state.step)
    run = StepContext(
        examples=train_examples,
        tokens=tokens,
        pad_id=pad_id,
        with_answers=with_answers,
        method=method,
        beta=float(tc.beta),
        local_batch=int(tc.batch_size) // accelerator.num_processes,
        max_grad_norm=float(tc.max_grad_norm) if tc.max_grad_norm else None,
        strategy=strategy,
        head=head_of(peft_model),
    )

    val_correct = torch.tensor([example.correct for example in val_examples])

    def run_validation() -> None:
        two_way = validation_logits(
            accelerator,
            model,
            peft_model,
            val_examples,
            tokens,
            pad_id,
            int(tc.eval_batch_size),
            run.method,
        )
        scores = validation_metrics(two_way, val_correct)
        tracker.log({f"val/{k}": v for k, v in scores.items()}, step=state.step)
        if is_better(tc.best_metric, scores[tc.best_metric], state.best_value):
            state.best_step, state.best_value = state.step, scores[tc.best_metric]
            state.best_metrics = scores
            full = dist.full_trainable_state(strategy, peft_model)  # every rank gathers
            if rank0:
                save_adapter(peft_model, output_dir / "adapter", invocation, full)
        accelerator.wait_for_everyone()

    def save_checkpoint() -> None:
        snapshot = gather_snapshot(accelerator, strategy, peft_model, optimizer, scheduler, state)
        if rank0:
            ckpt.save_checkpoint(output_dir, snapshot, int(tc.keep_last))
        accelerator.wait_for_everyone()

    if state.step == 0 and (tc.eval_at_start or method.adapter_head):  # a head's step 0: the probe
        run_validation()

    progress = tqdm(
        total=steps, initial=state.step, disable=not (rank0 and tc.progress), desc="train"
    )
    window_tokens, window_start = 0, time.perf_counter()
    while state.step < steps:
        batches = plan_batches(
            lengths, int(tc.batch_size), epoch_seed(int(cfg.seed), state.epoch), tc.group_by_length
        )
        for batch_index in range(state.batch_in_epoch, len(batches)):
            micro_batches = shard_and_split(
                batches[batch_index],
                lengths,
                accelerator.process_index,
                accelerator.num_processes,
                int(tc.micro_batch_size),
            )
            loss_sum, grad_norm, batch_tokens = train_one_batch(
                accelerator, model, peft_model, optimizer, scheduler, micro_batches, run
            )
            window_tokens += batch_tokens
            state.step += 1
            state.batch_in_epoch = batch_index + 1

            if state.step % int(tc.log_every) == 0 or state.step == steps:
                loss, ce, kl = accelerator.reduce(loss_sum, reduction="mean").tolist()
                seen = accelerator.reduce(
                    torch.tensor(float(window_tokens), device=accelerator.device), "sum"
                )
                tokens_per_s = float(seen) / max(time.perf_counter() - window_start, 1e-9)
                record = {
                    "train/loss": loss,
                    "train/ce": ce,
                    "train/kl": kl,
                    "train/lr": scheduler.get_last_lr()[0],
                    "train/tokens_per_s": tokens_per_s,
                    "train/tokens": int(seen),
                    "train/epoch": state.epoch,
                }
                if grad_norm is not None:
                    record["train/grad_norm"] = float(grad_norm)
                tracker.log(record, step=state.step)
                progress.set_postfix(loss=f"{loss:.4f}", tok_s=f"{tokens_per_s:.0f}")
                window_tokens, window_start = 0, time.perf_counter()
            progress.update(1)

            if state.step == steps or (tc.eval_every and state.step % int(tc.eval_every) == 0):
                run_validation()
            checkpoint_or_stop(accelerator, tc, state.step, steps, save_checkpoint)
            if state.step >= steps:
                break
        else:
            state.epoch, state.batch_in_epoch = state.epoch + 1, 0
    progress.close()

    if rank0:
        write_train_manifest(
            cfg,
            output_dir,
            state,
            tokens,
            (len(train_rows), len(val_rows), steps),
            accelerator,
            dist.describe(strategy, peft_model),
            head_fit,
        )
        tracker.finish()
    accelerator.wait_for_everyone()
    return TrainResult(output_dir=output_dir, model=peft_model, tokenizer=tokenizer, state=state)


def write_train_manifest(
    cfg: DictConfig,
    output_dir: Path,
    state: ckpt.TrainState,
    tokens: QueryTokens,
    sizes: tuple[int, int, int],
    accelerator: Accelerator,
    strategy: dict,
    head_fit: dict | None = None,
) -> None:
    """manifest.json: dataset link (path + sha256), model, seed, versions, commit, best step,
    sizes (train examples, val examples, steps), the strategy and a head's starting fit."""
    num_train, num_val, steps = sizes

    dataset_manifest = Path(cfg.train.data_dir, MANIFEST).resolve()
    write_json_atomic(
        output_dir / "manifest.json",
        {
            "stage": "train",
            "method": cfg.method.name,
            "dataset": {"manifest": str(dataset_manifest), "sha256": sha256_file(dataset_manifest)},
            "model": model_fingerprint(cfg.model),
            "seed": int(cfg.seed),
            "examples": {"train": num_train, "val": num_val},
            "steps": steps,
            "world_size": accelerator.num_processes,
            "distributed_type": str(accelerator.distributed_type),
            "strategy": strategy,
            "best": {
                "metric": cfg.train.best_metric,
                "step": state.best_step,
                "value": state.best_value,
                "val_metrics": state.best_metrics,
            },
            "final": asdict(state),
            "query_tokens": {"yes": list(tokens.yes_ids), "no": list(tokens.no_ids)},
            "adapter": "adapter",
            **({"head_start": head_fit} if head_fit is not None else {}),
            **provenance(),
            "config": OmegaConf.to_container(cfg.train, resolve=True),
        },
    )
