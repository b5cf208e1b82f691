"""Training throughput: calibtune's recipe vs a plain Hugging Face Trainer + PEFT, same loss.

    HF_HUB_OFFLINE=1 .venv/bin/python benchmarks/bench_train.py [--method alora|lora]
        [--data <labeled set>] [--steps 4 --batch 8 --micro 4]

Both sides: the same model, method and LoRA config (`conf/method/<method>.yaml`; alora = PEFT's
activated LoRA on the follow-up query's tokens), examples (steps x batch training examples of
`--data`, drawn with seed 0, or of a synthetic labeled set; one epoch, so both see exactly the
same tokens), loss (CE on the [no, yes] query logits; for lora + beta * KL(base || tuned) over
the full vocabulary on the answer tokens, base = adapter disabled), optimizer (AdamW, same lr)
and effective batch (micro-batch x gradient accumulation). Each side runs in its own process;
the script prints tokens/s (non-padding query tokens, plus answer tokens when the KL term uses
them, over the wall time of all training steps), peak resident memory of the process, the
ratio, and achieved FLOP/s against a measured fp32 matmul peak. FLOPs counted as
(frozen base weights, no weight gradients): 4 x non-embedding params per trained token, 2 per token that only needs a no-grad pass
(the base pass; alora's prompt + answer), + 2 x vocab x hidden per position whose logits the
loss needs (x2 with grad).

The plain side is what a user writes with Trainer defaults: a collator that pads each batch to
its longest row (dynamic padding, no length grouping; left padding for alora, whose PEFT masks
count from the end) and full-sequence logits from `model(...)`.
"""

from __future__ import annotations

import argparse
import json
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))  # shared test fixtures


def peak_rss_mb() -> float:
    """Peak resident memory of this process in MiB (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def base_overrides(args) -> list[str]:
    return [
        f"model.name_or_path={args.model}",
        "model.device=cpu",
        "model.dtype=float32",
        "logger=none",
        f"train.beta={args.beta}",
        f"optim.lr={args.lr}",
        f"method={args.method}",
    ]


def make_data(args, out_dir: Path) -> Path:
    """steps x batch training examples: a seeded sample of `--data`'s train split, or synthetic
    (responses right or wrong at random; no generation)."""
    from fixtures.labeled import write_synthetic_labeled_set  # tests/fixtures, shared

    from calibtune.config import compose
    from calibtune.examples import MANIFEST, read_labeled_split, split_path
    from calibtune.io import write_jsonl_atomic
    from calibtune.models import load_tokenizer

    cfg = compose("train", base_overrides(args))
    n_train = args.steps * args.batch
    if args.data is None:
        sizes = {"train": n_train, "val": 8, "test": 2}
        return write_synthetic_labeled_set(out_dir, load_tokenizer(cfg.model), cfg.prompt, sizes)
    rows = read_labeled_split(args.data, "train")
    out_dir.mkdir(parents=True)
    picked = sorted(random.Random(0).sample(range(len(rows)), n_train))
    write_jsonl_atomic(split_path(out_dir, "train"), [rows[i] for i in picked])
    for split in ("val", "test"):
        write_jsonl_atomic(split_path(out_dir, split), read_labeled_split(args.data, split)[:8])
    shutil.copy(Path(args.data, MANIFEST), out_dir / MANIFEST)
    return out_dir


def useful_flops(model, examples, beta: float, method: str) -> float:
    """Training FLOPs the loss needs (the count in the module docstring), summed over `examples`."""
    cfg = model.config
    embed = cfg.vocab_size * cfg.hidden_size
    non_embedding = sum(p.numel() for p in model.parameters()) - embed
    if not getattr(cfg, "tie_word_embeddings", False):
        non_embedding -= embed
    head = 2 * embed
    total = 0.0
    for e in examples:
        n_ans = len(e.answer.input_ids) - e.answer.answer_start
        if method == "alora":  # prompt + answer without grad, the query suffix with grad
            total += 2 * non_embedding * len(e.answer.input_ids)
            total += 4 * non_embedding * len(e.suffix_ids) + 2 * head
            continue
        total += 4 * non_embedding * len(e.query_ids) + 2 * head  # query: LM head on 1 position
        if beta > 0:
            total += 4 * non_embedding * len(e.answer.input_ids) + 2 * head * n_ans  # tuned
            total += 2 * non_embedding * len(e.answer.input_ids) + head * n_ans  # base, no grad
    return total


def side_ours(args, data_dir: Path, run_dir: Path) -> dict:
    """calibtune's recipe; tokens and time from its metrics.jsonl (one record per step)."""
    from calibtune.config import compose
    from calibtune.tracking import read_metrics
    from calibtune.train.lora import train_lora

    cfg = compose(
        "train",
        [
            *base_overrides(args),
            f"run_dir={run_dir}",
            f"train.data_dir={data_dir}",
            f"train.batch_size={args.batch}",
            f"train.micro_batch_size={args.micro}",
            "train.eval_at_start=false",
            "train.eval_every=0",
            "train.checkpoint_every=0",
            "train.log_every=1",
            "train.progress=false",
        ],
    )
    train_lora(cfg)
    steps = [r for r in read_metrics(run_dir / "train") if "train/tokens" in r]
    tokens = sum(r["train/tokens"] for r in steps)
    seconds = sum(r["train/tokens"] / r["train/tokens_per_s"] for r in steps)
    return {"tokens": tokens, "seconds": seconds, "steps": len(steps)}


def side_hf(args, data_dir: Path, run_dir: Path) -> dict:
    """A plain transformers Trainer over a PEFT model with the same loss terms."""
    import torch
    from transformers import Trainer, TrainerCallback, TrainingArguments

    from calibtune.config import compose
    from calibtune.examples import read_labeled_split
    from calibtune.models import load_model, load_tokenizer
    from calibtune.models.confidence import common_suffix_ids, find_query_tokens, query_logits
    from calibtune.train.data import tokenize_examples
    from calibtune.train.loss import calibration_loss
    from calibtune.train.methods import attach_lora

    cfg = compose("train", base_overrides(args))
    tokenizer = load_tokenizer(cfg.model)
    tokens = find_query_tokens(tokenizer, cfg.prompt.query_yes, cfg.prompt.query_no)
    examples = tokenize_examples(tokenizer, read_labeled_split(data_dir, "train"))
    alora = args.method == "alora"
    torch.manual_seed(0)
    invocation = common_suffix_ids(examples) if alora else None
    model = attach_lora(load_model(cfg.model), cfg.lora, alora_invocation_tokens=invocation)
    pad = tokenizer.pad_token_id
    with_answers = args.beta > 0 and not alora

    def pad_batch(seqs, left: bool = False):
        width = max(len(s) for s in seqs)
        ids = torch.full((len(seqs), width), pad)
        mask = torch.zeros((len(seqs), width), dtype=torch.long)
        for i, s in enumerate(seqs):
            span = slice(width - len(s), width) if left else slice(0, len(s))
            ids[i, span] = torch.tensor(s)
            mask[i, span] = 1
        return ids, mask

    def collator(items):
        q_ids, q_mask = pad_batch([e.query_ids for e in items], left=alora)
        a_ids, a_mask = pad_batch([e.answer.input_ids for e in items])
        starts = torch.tensor([e.answer.answer_start for e in items])
        return {
            "q_ids": q_ids,
            "q_mask": q_mask,
            "a_ids": a_ids,
            "a_mask": a_mask,
            "a_start": starts,
            "correct": torch.tensor([e.correct for e in items]),
        }

    counted = {"tokens": 0, "start": None, "end": None}

    class PlainTrainer(Trainer):
        def compute_loss(self, model, inputs, return_outputs=False, num_items_in_batch=None):
            counted["tokens"] += int(inputs["q_mask"].sum())
            logits = model(input_ids=inputs["q_ids"], attention_mask=inputs["q_mask"]).logits
            last = torch.full((logits.shape[0],), logits.shape[1] - 1)
            if not alora:
                last = inputs["q_mask"].sum(dim=1) - 1
            two_way = query_logits(logits[torch.arange(len(last)), last], tokens)
            if not with_answers:
                return calibration_loss(two_way, inputs["correct"], len(last)).total
            counted["tokens"] += int(inputs["a_mask"].sum())
            a_ids, a_mask = inputs["a_ids"], inputs["a_mask"]
            positions = torch.arange(a_ids.shape[1])
            targets = (positions[None, 1:] >= inputs["a_start"][:, None]) & (a_mask[:, 1:] > 0)
            with torch.no_grad(), model.disable_adapter():
                base = model(input_ids=a_ids, attention_mask=a_mask).logits[:, :-1][targets]
            tuned = model(input_ids=a_ids, attention_mask=a_mask).logits[:, :-1][targets]
            rows = targets.nonzero()[:, 0]
            return calibration_loss(
                two_way,
                inputs["correct"],
                len(last),
                beta=args.beta,
                tuned_answer_logits=tuned,
                base_answer_log_probs=torch.log_softmax(base.float(), dim=-1),
                answer_rows=rows,
            ).total

    class Clock(TrainerCallback):
        def on_step_begin(self, *_, **__):
            if counted["start"] is None:
                counted["start"] = time.perf_counter()

        def on_step_end(self, *_, **__):
            counted["end"] = time.perf_counter()

    training_args = TrainingArguments(
        output_dir=str(run_dir),
        per_device_train_batch_size=args.micro,
        gradient_accumulation_steps=args.batch // args.micro,
        num_train_epochs=1,
        learning_rate=args.lr,
        lr_scheduler_type="cosine",
        max_grad_norm=1.0,
        logging_steps=1,
        save_strategy="no",
        report_to=[],
        remove_unused_columns=False,
        use_cpu=True,
        dataloader_num_workers=0,
        disable_tqdm=True,
        seed=0,
    )
    trainer = PlainTrainer(
        model=model,
        args=training_args,
        train_dataset=examples,
        data_collator=collator,
        callbacks=[Clock()],
    )
    result = trainer.train()
    return {
        "tokens": counted["tokens"],
        "seconds": counted["end"] - counted["start"],
        "steps": result.global_step,
    }


def matmul_peak_gflops(size: int = 1024, repeats: int = 10) -> float:
    """Best fp32 matmul throughput of this machine (torch's default threads)."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    best = float("inf")
    for _ in range(repeats):
        start = time.perf_counter()
        a @ b
        best = min(best, time.perf_counter() - start)
    return 2 * size**3 / best / 1e9


def run_child(side: str, args, data_dir: Path, work: Path) -> dict:
    """One side in a fresh process; its JSON result line."""
    cmd = [sys.executable, __file__, "--side", side, "--subset", str(data_dir), "--work", str(work)]
    skip = ("side", "data", "work", "subset")
    cmd += [f"--{k}={v}" for k, v in vars(args).items() if k not in skip]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    if out.returncode != 0:
        raise SystemExit(f"{side} side failed:\n{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    """Run both sides (each in its own process) and print tokens/s, memory and the ratio."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="smollm2-135m-instruct")
    parser.add_argument("--steps", type=int, default=4)
    parser.add_argument("--batch", type=int, default=8, help="effective batch (examples/step)")
    parser.add_argument("--micro", type=int, default=4, help="micro-batch (accumulation fills)")
    parser.add_argument("--beta", type=float, default=1.0)
    parser.add_argument("--method", choices=["alora", "lora"], default="alora")
    parser.add_argument("--lr", type=float, default=2e-4)
    parser.add_argument("--side", choices=["ours", "hf"], default=None)
    parser.add_argument("--data", default=None, help="a labeled set (default: synthetic)")
    parser.add_argument("--work", default=None)
    parser.add_argument("--subset", default=None, help=argparse.SUPPRESS)  # child: examples
    args = parser.parse_args()

    if args.side is not None:  # child process: one side, one JSON line on stdout
        run = {"ours": side_ours, "hf": side_hf}[args.side]
        result = run(args, Path(args.subset), Path(args.work) / args.side)
        result["peak_rss_mb"] = peak_rss_mb()
        print(json.dumps(result))
        return

    import torch

    from calibtune.config import compose
    from calibtune.examples import read_labeled_split
    from calibtune.models import load_model, load_tokenizer
    from calibtune.train.data import tokenize_examples

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data_dir = make_data(args, work / "data")
        results = {side: run_child(side, args, data_dir, work) for side in ("ours", "hf")}
        cfg = compose("train", base_overrides(args))
        tokenizer = load_tokenizer(cfg.model)
        examples = tokenize_examples(tokenizer, read_labeled_split(data_dir, "train"))
        flops = useful_flops(load_model(cfg.model), examples, args.beta, args.method)
    peak = matmul_peak_gflops()
    print(
        f"model {args.model}  method {args.method}  data {args.data or 'synthetic'}  "
        f"steps {args.steps}  batch {args.batch} (micro {args.micro})  beta {args.beta}"
    )
    print(f"threads {torch.get_num_threads()}  fp32 matmul peak {peak:.1f} GFLOP/s")
    print(
        f"{'side':<22}{'tokens':>8}{'seconds':>10}{'tokens/s':>10}{'peak RSS MiB':>14}{'GFLOP/s':>9}{'% peak':>8}"
    )
    for side, name in (("hf", "HF Trainer + PEFT"), ("ours", "calibtune recipe")):
        r = results[side]
        gflops = flops / r["seconds"] / 1e9
        print(
            f"{name:<22}{r['tokens']:>8}{r['seconds']:>10.1f}{r['tokens'] / r['seconds']:>10.1f}"
            f"{r['peak_rss_mb']:>14.0f}{gflops:>9.1f}{100 * gflops / peak:>7.1f}%"
        )
    ours, hf = results["ours"], results["hf"]
    speedup = (ours["tokens"] / ours["seconds"]) / (hf["tokens"] / hf["seconds"])
    print(
        f"speedup (tokens/s ours / HF): {speedup:.2f}x   "
        f"peak memory ours / HF: {ours['peak_rss_mb'] / hf['peak_rss_mb']:.2f}"
    )


if __name__ == "__main__":
    main()
