"""The data stage (docs/data.md): answer questions with the base model, grade the
answers, and write a labeled confidence set (train/val/test JSONL + manifest.json).

    calibtune data [overrides]            # or: python data/build_dataset.py [overrides]

Reads top to bottom: load and validate the QA rows -> pick the examples and split them by
question -> answer and grade them in chunks (each finished chunk is cached under
`<output_dir>/.partial/`, so a killed build resumes where it stopped) -> leakage check ->
write the splits and the manifest atomically -> print per-domain accuracy.

Scale-out: `data.shard=i data.num_shards=n` answers only shard i (a SLURM array task or one GPU
each); whichever run finds every shard finished merges them into the final files (`data.merge=false`:
never, for SLURM array tasks that may finish together). A run with `data.shard=null` answers
every shard that is not finished yet, then merges.
"""

from __future__ import annotations

import json
import logging
import random
import shutil
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from pathlib import Path

from omegaconf import DictConfig, OmegaConf
from tqdm.auto import tqdm

from calibtune.config import check_config, resolved_container, save_config
from calibtune.data.generation import generate_answers
from calibtune.data.grading import auto_grader, grade, judge_grades
from calibtune.data.pool import AnswerPool, LabeledPart, join_parts
from calibtune.data.sources import SOURCE_KEY, load_qa_rows, question_key
from calibtune.errors import ConfigError, InputError
from calibtune.examples import LABELED_FIELDS, MANIFEST, SPLITS, split_path
from calibtune.io import read_jsonl, sha256_file, sha256_text, write_json_atomic, write_jsonl_atomic
from calibtune.models import load_model, load_tokenizer, model_fingerprint
from calibtune.models.confidence import (
    QueryModel,
    query_suffix,
    query_tokens_of,
    render_query_prompt,
)
from calibtune.models.encoding import encode_text
from calibtune.models.prompts import render_answer_prompt
from calibtune.models.signals import (
    SIGNALS_FILE,
    BaseSignals,
    compute_signals,
    concat,
    load_signals,
    save_signals,
    signals_from_generation,
    signals_key,
    temperature_grid,
)
from calibtune.runtime import is_rank_zero, process_group, provenance, set_seed, share_work

log = logging.getLogger(__name__)
PARTIAL = ".partial"

# Test hook: called with the number of chunks finished in this process (tests raise from it to
# simulate a kill midway).
after_chunk: Callable[[int], None] | None = None


# --- choosing and splitting the examples -------------------------------------------------------


def split_sizes(data_cfg, available: int) -> dict[str, int]:
    """Examples per split: val_size and test_size, the rest of n_examples for train; scaled down
    proportionally when the source has fewer rows than n_examples."""
    n = int(data_cfg.n_examples)
    val, test = int(data_cfg.val_size), int(data_cfg.test_size)
    if n < 1 or val < 0 or test < 0 or val + test >= n:
        raise ConfigError(
            f"data.n_examples={n} must exceed data.val_size + data.test_size = {val + test}"
        )
    if available < n:
        log.warning(
            "the source has %d rows, fewer than data.n_examples=%d: using all", available, n
        )
        val, test = round(val * available / n), round(test * available / n)
        n = available
    return {"train": n - val - test, "val": val, "test": test}


def filter_domains(rows: list[dict], data_cfg) -> list[dict]:
    """Keep data.include_domains (all when empty), drop data.exclude_domains."""
    include = set(data_cfg.include_domains or [])
    exclude = set(data_cfg.exclude_domains or [])
    kept = [
        r for r in rows if (not include or r["domain"] in include) and r["domain"] not in exclude
    ]
    if not kept:
        raise ConfigError("no QA rows left after data.include_domains / data.exclude_domains")
    return kept


def interleave(groups: list[list[dict]], key: str, rng: random.Random) -> list[list[dict]]:
    """Question groups shuffled within each value of `key`, then taken round-robin across the
    values, so every prefix is balanced over them (groups without the key share one value)."""
    by_value: dict[str, list[list[dict]]] = defaultdict(list)
    for group in groups:
        by_value[str(group[0].get(key, ""))].append(group)
    queues = []
    for value in sorted(by_value):
        queue = sorted(by_value[value], key=lambda g: g[0]["qid"])
        rng.shuffle(queue)
        queues.append(queue)
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]


def entity_groups(rows: list[dict]) -> list[list[dict]]:
    """Rows that must share a split, in first-seen order: the same `group` (the entity a row is
    about; a list joins several), the same qid, or the same question text (case and whitespace
    folded, as `check_leakage` compares them), transitively. Each row's `group` is set to its
    component's name: the smallest group key in it."""
    parent: dict[str, str] = {}

    def find(key: str) -> str:
        while parent.setdefault(key, key) != key:
            parent[key] = parent[parent[key]]
            key = parent[key]
        return key

    for row in rows:
        root = find("qid:" + str(row["qid"]))
        for key in ["text:" + question_key(row["question"])] + [
            "group:" + g for g in group_keys(row)
        ]:
            parent[find(key)] = root
    components: dict[str, list[dict]] = {}
    for row in rows:
        components.setdefault(find("qid:" + str(row["qid"])), []).append(row)
    for members in components.values():
        name = min(g for row in members for g in group_keys(row))
        for row in members:
            row["group"] = name
    return list(components.values())


def group_keys(row: dict) -> list[str]:
    """The entity keys of a row: its `group` (a string or a list of strings), else its qid."""
    group = row.get("group")
    if group is None:
        return [str(row["qid"])]
    return [str(g) for g in group] if isinstance(group, list) else [str(group)]


def question_groups(rows: list[dict]) -> list[list[dict]]:
    """Rows of one fact (the same qid), in first-seen order."""
    facts: dict[str, list[dict]] = {}
    for row in rows:
        facts.setdefault(str(row["qid"]), []).append(row)
    return list(facts.values())


def interleave_by_domain(rows: list[dict], rng: random.Random) -> list[list[dict]]:
    """Facts (see `question_groups`) balanced over domains, and within a domain over
    difficulty levels where rows have one (the built-in arithmetic)."""
    by_domain: dict[str, list[list[dict]]] = defaultdict(list)
    for fact in question_groups(rows):
        by_domain[fact[0]["domain"]].append(fact)
    queues = [interleave(by_domain[d], "difficulty", rng) for d in sorted(by_domain)]
    return [q[i] for i in range(max(map(len, queues))) for q in queues if i < len(q)]


def assign_splits(rows: list[dict], data_cfg, seed: int) -> list[dict]:
    """Pick the examples and split them by entity group, deterministic from the seed.

    Rows that already carry a split (a user's own split) keep it. Otherwise facts are visited
    balanced over domains; the first fact of an entity group picks the group's split (see
    `pick_split`: the split its domain is furthest behind on), and every later fact of that
    group goes to the same split (or is left out once that split is full), so no group is in two
    splits. A group whose first fact is in a data.holdout_domains domain goes to test; a
    holdout fact whose group is already in train or val is left out, so the holdout domains and
    the entities of their test rows are unseen in train and val; with data.holdout_test_only
    the other domains' facts go to train and val only (or are left out when their group is in
    test), so test is all holdout. Facts are trimmed to fit, so
    the split sizes come out exact unless the source runs out."""
    rows = [dict(row) for row in rows]
    entity_groups(rows)
    if all(row.get("split") in SPLITS for row in rows):
        return rows
    holdout = set(data_cfg.holdout_domains or [])
    test_only = bool(holdout) and bool(data_cfg.holdout_test_only)  # test: holdout rows alone
    sizes = split_sizes(data_cfg, len(rows))
    remaining = dict(sizes)
    group_split: dict[str, str] = {}
    taken: dict[str, Counter] = defaultdict(Counter)  # rows per split, per domain
    chosen = []
    rng = random.Random(seed)
    for fact in interleave_by_domain(rows, rng):
        if not any(remaining.values()):
            break
        held_out = any(r["domain"] in holdout for r in fact)
        split = group_split.get(fact[0]["group"])
        if split is None:
            allowed = ["test"] if held_out else ["train", "val"] if test_only else list(SPLITS)
            open_splits = [s for s in allowed if remaining[s] > 0]
            if not open_splits:
                continue
            split = pick_split(open_splits, sizes, taken[fact[0]["domain"]], rng)
            group_split[fact[0]["group"]] = split
        if (held_out and split != "test") or (test_only and not held_out and split == "test"):
            continue
        kept = fact[: remaining[split]]
        chosen += [{**row, "split": split} for row in kept]
        remaining[split] -= len(kept)
        taken[fact[0]["domain"]][split] += len(kept)
    if any(remaining.values()):
        log.warning("split sizes short of %s by %s: the source ran out of groups", sizes, remaining)
    return chosen


def pick_split(
    open_splits: list[str], sizes: dict[str, int], taken: Counter, rng: random.Random
) -> str:
    """The open split a domain is furthest behind on, against each split's share of all
    examples (ties at random): stratifying by domain keeps a domain of a dozen entity groups
    (months) in every split, where a draw by room left misses one split about one time in ten."""
    total, done = sum(sizes.values()), sum(taken.values()) + 1
    deficit = {s: round(sizes[s] / total * done - taken[s], 9) for s in open_splits}
    best = max(deficit.values())
    return rng.choice([s for s in open_splits if deficit[s] == best])


def check_leakage(rows: list[dict]) -> None:
    """Fail when a question (by qid or by text) or an entity group is in two splits."""
    first_split: dict[str, str] = {}
    for row in sorted(rows, key=lambda r: SPLITS.index(r["split"])):
        keys = [
            ("qid", row["qid"]),
            ("question", question_key(row["question"])),
            *(("group", g) for g in group_keys(row)),
        ]
        for kind, key in keys:
            seen = first_split.setdefault(f"{kind}:{key}", row["split"])
            if seen != row["split"]:
                path, _, line = str(row.get(SOURCE_KEY, "input")).rpartition(":")
                what = f"question {row['question']!r}" if kind != "group" else f"group {key!r}"
                raise InputError(
                    path or line,
                    int(line) if path and line.isdigit() else None,
                    "group" if kind == "group" else "question",
                    f"leakage: {what} is in {seen} and in {row['split']}; "
                    "remove the duplicate or give both rows the same split",
                )


# --- answering and grading ---------------------------------------------------------------------


def generation_kwargs(data_cfg) -> dict:
    """generate_answers keyword arguments from the data config."""
    return {
        "max_new_tokens": int(data_cfg.max_new_tokens),
        "batch_size": int(data_cfg.batch_size),
        "stop_strings": list(data_cfg.stop_strings or []),
        "num_samples": int(data_cfg.num_samples),
        "temperature": float(data_cfg.temperature),
    }


def sample_hits(model, tokenizer, rows: list[dict], cfg) -> list[list[bool]]:
    """Per answered row, which of its samples are correct (judge rows: one batched model call)."""
    judged = [{**r, "response": s} for r in rows if r["grader"] == "judge" for s in r["samples"]]
    verdicts = iter(
        judge_grades(model, tokenizer, cfg.prompt, judged, batch_size=int(cfg.data.batch_size))
        if judged
        else []
    )
    return [
        [next(verdicts) for _ in r["samples"]]
        if r["grader"] == "judge"
        else [
            grade(s, r["answers"], r["choices"], r["grader"], r["question"]) for s in r["samples"]
        ]
        for r in rows
    ]


def label_qa_rows(model, tokenizer, qa_rows: list[dict], cfg) -> list[dict]:
    """Answer, grade and render prompt and query for QA rows (split is kept, or "")."""
    return label_and_signal(model, tokenizer, qa_rows, cfg, record=False)[0]


def label_and_signal(
    model, tokenizer, qa_rows: list[dict], cfg, record: bool = True
) -> tuple[list[dict], BaseSignals | None, Counter]:
    """`label_qa_rows`, and with `record` the rows' base signals (`calibtune.models.signals`):
    read from the generation pass plus the query suffix on its KV cache, or, for rows that
    pass cannot serve (sampling, a restated query, a response that does not re-encode to its
    tokens), one base pass each. Also returns the model work done, by kind (rows, tokens)."""
    prompts = [
        render_answer_prompt(tokenizer, cfg.prompt, r["question"], r["choices"]) for r in qa_rows
    ]
    record = record and records_signals(cfg)
    recorder = SignalRecorder(model, tokenizer, cfg, qa_rows, prompts) if record else None
    answers = generate_answers(
        model,
        tokenizer,
        prompts,
        seed=int(cfg.seed),
        on_batch=recorder.on_batch if recorder else None,
        **generation_kwargs(cfg.data),
    )
    grader = str(cfg.data.grader)
    labeled = [
        {
            **output_row(row),
            "prompt": prompt,
            "response": samples[0],
            "samples": samples,
            "grader": auto_grader(row) if grader == "auto" else grader,
            "split": row.get("split", ""),
        }
        for row, prompt, samples in zip(qa_rows, prompts, answers, strict=True)
    ]
    for row, hits in zip(labeled, sample_hits(model, tokenizer, labeled, cfg), strict=True):
        row["correct"] = int(hits[0]) if len(hits) == 1 else round(sum(hits) / len(hits), 6)
        row["query"] = render_query_prompt(
            tokenizer, cfg.prompt, row["question"], row["choices"], row["response"]
        )
        if len(hits) == 1:
            del row["samples"]
    work = Counter({"generation_rows": len(qa_rows)})
    if recorder is None:
        return labeled, None, work
    return labeled, recorder.finish(labeled, work), work


class SignalRecorder:
    """Collects base signals from each generated batch (`generate_answers`' `on_batch`)."""

    def __init__(self, model, tokenizer, cfg, qa_rows: list[dict], prompts: list[str]):
        self.model, self.tokenizer, self.cfg = model, tokenizer, cfg
        self.qa_rows, self.prompts = qa_rows, prompts
        self.tokens = query_tokens_of(tokenizer, cfg.prompt)
        self.temperatures, self.n_bins = temperature_grid(cfg.eval), int(cfg.eval.n_bins)
        self.layer = int(cfg.model.feature_layer)  # the hidden state recorded
        self.parts: list[BaseSignals] = []
        self.work: Counter = Counter()

    def on_batch(self, batch: list[int], inputs: dict, out, answers: list[str]) -> None:
        """Signals of one generated batch from its outputs and the suffix on its cache."""
        rows = [self.qa_rows[i] for i in batch]
        queries = [
            render_query_prompt(self.tokenizer, self.cfg.prompt, r["question"], r["choices"], a)
            for r, a in zip(rows, answers, strict=True)
        ]
        suffixes = {
            query_suffix(self.prompts[i], a, q)
            for i, a, q in zip(batch, answers, queries, strict=True)
        }
        self.work["generation_tokens"] += int(out.sequences.numel())
        if len(suffixes) != 1 or None in suffixes:  # restated queries: computed afterwards
            return
        suffix_ids = encode_text(self.tokenizer, suffixes.pop())
        signals, _ = signals_from_generation(
            model=self.model,
            inputs=inputs,
            out=out,
            response_ids=[encode_text(self.tokenizer, a) for a in answers],
            suffix_ids=suffix_ids,
            tokens=self.tokens,
            ids=[str(r["id"]) for r in rows],
            temperatures=self.temperatures,
            n_bins=self.n_bins,
            layer=self.layer,
        )
        self.work["suffix_rows"] += len(batch)
        self.work["suffix_tokens"] += len(batch) * (len(suffix_ids) + 1)
        if signals is not None:
            self.parts.append(signals)

    def finish(self, labeled: list[dict], work: Counter) -> BaseSignals:
        """All rows' signals in `labeled` order: the rest by one base pass each."""
        ids = [str(r["id"]) for r in labeled]
        have = {i for part in self.parts for i in part.ids}
        rest = [r for r in labeled if str(r["id"]) not in have]
        parts = list(self.parts)
        if rest:
            parts.append(
                compute_signals(
                    QueryModel.of(self.model),
                    self.tokenizer,
                    rest,
                    self.tokens,
                    int(self.cfg.eval.batch_size),
                    self.temperatures,
                    self.n_bins,
                    self.layer,
                )
            )
        work.update(self.work)
        work["whole_query_rows"] += len(rest)
        return concat(parts).select(ids)


def answer_settings(cfg) -> dict:
    """Everything an answer, its grade and its signals depend on, but the question: the seed only
    when answers are sampled (greedy answers are the same under every seed, so seeds share a
    pool)."""
    return {
        "model": model_fingerprint(cfg.model),
        "model_cfg": OmegaConf.to_container(cfg.model, resolve=True),
        "prompt": OmegaConf.to_container(cfg.prompt, resolve=True),
        "generation": generation_kwargs(cfg.data),
        "grader": str(cfg.data.grader),
        "seed": int(cfg.seed) if float(cfg.data.temperature) > 0 else None,
        "signals": [temperature_grid(cfg.eval), int(cfg.eval.n_bins)]
        if records_signals(cfg)
        else None,
    }


def build_fingerprint(cfg, rows: list[dict]) -> str:
    """Hash of everything a cached chunk depends on (model, prompts, generation, examples)."""
    parts = {**answer_settings(cfg), "ids": [r["id"] for r in rows]}
    return sha256_text(json.dumps(parts, sort_keys=True, default=str))[:16]


def shard_rows(rows: list[dict], shard: int, num_shards: int) -> list[dict]:
    """The examples of one shard: assigned by a hash of the id, so each shard is a balanced
    sample of the whole set."""
    return [r for r in rows if int(sha256_text(r["id"])[:8], 16) % num_shards == shard]


def length_chunks(rows: list[dict], cfg) -> list[list[int]]:
    """Row indices, longest question first, in chunks of data.batch_size x data.batches_per_chunk:
    the unit one process labels, the same whatever the number of processes."""
    prompts_len = [len(r["question"]) + sum(len(c) for c in r["choices"] or []) for r in rows]
    order = sorted(range(len(rows)), key=lambda i: (-prompts_len[i], i))
    chunk = int(cfg.data.batch_size) * int(cfg.data.batches_per_chunk)
    return [order[start : start + chunk] for start in range(0, len(order), chunk)]


def records_signals(cfg) -> bool:
    """Whether the data stage records base signals (hf backend and data.base_signals)."""
    return cfg.data.backend == "hf" and bool(cfg.data.base_signals)


def label_qa_rows_on_ranks(model, tokenizer, qa_rows: list[dict], cfg, group) -> LabeledPart:
    """`label_and_signal` over the launched processes (`group`, None: this one): chunk k of
    `length_chunks` on rank k % world size; every rank gets all rows back in input order."""
    chunks = length_chunks(qa_rows, cfg)
    tasks = {
        k: (
            lambda idx=idx: LabeledPart(
                *label_and_signal(model, tokenizer, [qa_rows[i] for i in idx], cfg)
            )
        )
        for k, idx in enumerate(chunks)
    }
    done = share_work(group, tasks)
    part = join_parts([done[k] for k in range(len(chunks))])
    by_index = dict(zip([i for idx in chunks for i in idx], part.rows, strict=True))
    rows = [by_index[i] for i in range(len(qa_rows))]
    signals = part.signals.select([str(r["id"]) for r in rows]) if part.signals else None
    return LabeledPart(rows, signals, part.work)


def answer_shard(
    model, tokenizer, rows: list[dict], cfg, shard_dir: Path, bar, group=None, pool=None
) -> LabeledPart:
    """Label one shard chunk by chunk; finished chunks are read back instead of redone. With
    several processes (`group`), chunk k is labeled by rank k % world_size (see label_chunk)."""
    parts = [[rows[i] for i in chunk] for chunk in length_chunks(rows, cfg)]
    world = group.num_processes if group is not None else 1
    labeled: list[LabeledPart] = []
    done_here = 0
    for first in range(0, len(parts), world):
        tasks = {
            number: (
                lambda n=number: label_chunk(model, tokenizer, parts[n], cfg, shard_dir, n, pool)
            )
            for number in range(first, min(first + world, len(parts)))
        }
        for number, (result, fresh) in sorted(share_work(group, tasks).items()):
            if fresh and is_rank_zero():
                write_part(chunk_path(shard_dir, number), result, cfg)
                done_here += 1
                if after_chunk is not None:
                    after_chunk(done_here)
            labeled.append(result)
            bar.update(len(result.rows))
    return join_parts(labeled)


def chunk_path(shard_dir: Path, number: int) -> Path:
    """Cache file of one finished chunk."""
    return shard_dir / f"chunk-{number:05d}.jsonl"


def write_part(path: Path, part: LabeledPart, cfg) -> None:
    """A part's rows (JSONL at `path`) and signals (beside it, .safetensors): signals first,
    so a part whose rows are written is complete."""
    if part.signals is not None:
        save_signals(path.with_suffix(".safetensors"), part.signals, signals_key(cfg))
    write_jsonl_atomic(path, part.rows)


def read_part(path: Path, cfg) -> LabeledPart | None:
    """A part written by `write_part`, or None when it (or its signals, when recorded) is
    missing."""
    signals_path = path.with_suffix(".safetensors")
    if not path.is_file() or (records_signals(cfg) and not signals_path.is_file()):
        return None
    signals = load_signals(signals_path)[0] if records_signals(cfg) else None
    return LabeledPart(read_jsonl(path), signals, Counter())


def label_chunk(
    model, tokenizer, part: list[dict], cfg, shard_dir: Path, number: int, pool=None
) -> tuple[LabeledPart, bool]:
    """A chunk's labeled rows, read back from its cache file when it is finished there, and
    whether they were labeled now (to be written) rather than read back. Rows the answer pool
    (`pool`) holds take its answers; only the others are answered."""
    cached = read_part(chunk_path(shard_dir, number), cfg)
    if cached is not None and [r["id"] for r in cached.rows] == [r["id"] for r in part]:
        return cached, False

    def label(rows: list[dict]) -> LabeledPart:
        return LabeledPart(*label_and_signal(model, tokenizer, rows, cfg))

    return (label(part) if pool is None else pooled_or_labeled(pool, part, label)), True


def pooled_or_labeled(
    pool: AnswerPool, rows: list[dict], label: Callable[[list[dict]], LabeledPart]
) -> LabeledPart:
    """`rows` labeled, in their order: the pool's answers where it holds them, `label` of the
    others (only those pass through the model)."""
    pooled, missing = pool.take(rows)
    fresh = label(missing) if missing else None
    joined = join_parts([pooled, fresh] if fresh else [pooled])
    by_id = {str(r["id"]): r for r in joined.rows}
    ids = [str(r["id"]) for r in rows]
    signals = joined.signals.select(ids) if joined.signals is not None else None
    return LabeledPart([by_id[i] for i in ids], signals, joined.work)


def label_qa_rows_pooled(model, tokenizer, qa_rows: list[dict], cfg, group) -> LabeledPart:
    """`label_qa_rows_on_ranks`, through `data.pool_dir`'s answer pool when one is set: rows it
    holds take its answers, the others are answered and added to it (the eval's raw QA files,
    e.g. one style-shift set scored with several adapters)."""
    pool = answer_pool(cfg)
    if pool is None:
        return label_qa_rows_on_ranks(model, tokenizer, qa_rows, cfg, group)
    part = pooled_or_labeled(
        pool, qa_rows, lambda rows: label_qa_rows_on_ranks(model, tokenizer, rows, cfg, group)
    )
    if is_rank_zero():
        pool.add(part)
    return part


def answer_pool(cfg) -> AnswerPool | None:
    """The answer pool of `data.pool_dir` for this run's model, prompt and generation settings."""
    parts = answer_settings(cfg)
    return AnswerPool.of(cfg, parts, signals_key(cfg))


def shard_dir_of(partial: Path, shard: int, num_shards: int) -> Path:
    """Cache folder of one shard."""
    return partial / f"shard-{shard:05d}-of-{num_shards:05d}"


# --- writing -----------------------------------------------------------------------------------


def output_row(row: dict) -> dict:
    """A labeled example as written: the contract fields first, private keys dropped."""
    return {k: v for k, v in row.items() if not k.startswith("_")}


def accuracy_table(rows: Sequence[dict]) -> dict:
    """Count and accuracy overall, per split and per domain."""

    def summary(subset: list[dict]) -> dict:
        return {
            "n": len(subset),
            "accuracy": round(sum(r["correct"] for r in subset) / max(len(subset), 1), 4),
        }

    table = {"overall": summary(list(rows)), "splits": {}, "domains": {}}
    for split in SPLITS:
        table["splits"][split] = summary([r for r in rows if r["split"] == split])
    for domain in sorted({r["domain"] for r in rows}):
        table["domains"][domain] = summary([r for r in rows if r["domain"] == domain])
    return table


def write_labeled_set(
    cfg,
    out_dir: Path,
    rows: list[dict],
    source: str | None = None,
    signals: BaseSignals | None = None,
    work: Counter | None = None,
) -> dict:
    """Write train/val/test JSONL, the rows' base signals (when given) and then manifest.json,
    each atomically (`source`: the QA file the rows were read from, when not cfg.dataset;
    `work`: the model passes this run made, by kind)."""
    files = {}
    ordered = []
    for split in SPLITS:
        split_rows = sorted(
            (output_row(r) for r in rows if r["split"] == split), key=lambda r: r["id"]
        )
        ordered += split_rows
        write_jsonl_atomic(split_path(out_dir, split), split_rows)
        files[split_path(out_dir, split).name] = sha256_file(split_path(out_dir, split))
    signals_block = None
    if signals is not None:
        key = signals_key(cfg)
        save_signals(out_dir / SIGNALS_FILE, signals.select([str(r["id"]) for r in ordered]), key)
        files[SIGNALS_FILE] = sha256_file(out_dir / SIGNALS_FILE)
        signals_block = {
            "file": SIGNALS_FILE,
            "key": key,
            "rows": len(ordered),
            "temperatures": signals.temperatures,
            "n_bins": signals.n_bins,
        }
    data_cfg = resolved_container(cfg)["data"]
    manifest = {
        "format": "calibtune.examples",
        "fields": list(LABELED_FIELDS),
        "model": model_fingerprint(cfg.model),
        "prompt": OmegaConf.to_container(cfg.prompt, resolve=True),
        "dataset": (
            {"kind": "jsonl", "path": source}
            if source
            else OmegaConf.to_container(cfg.dataset, resolve=True)
        ),
        "grader": str(cfg.data.grader),
        "graders_used": sorted({r["grader"] for r in rows}),
        "generation": generation_kwargs(cfg.data),
        "seed": int(cfg.seed),
        "holdout_domains": list(data_cfg.get("holdout_domains") or []),
        "counts": {s: sum(r["split"] == s for r in rows) for s in SPLITS},
        "accuracy": accuracy_table(rows),
        "base_signals": signals_block,
        "work": dict(work or {}),
        **provenance(),
        "files": files,
    }
    write_json_atomic(out_dir / MANIFEST, manifest)
    return manifest


def print_accuracy(manifest: dict, out_dir: Path) -> None:
    """Per-domain and per-split accuracy of the base model, as a small table."""
    table = manifest["accuracy"]
    print(f"\nlabeled set: {out_dir}")
    print(f"{'domain':<20}{'n':>7}{'accuracy':>10}")
    for name, entry in [
        *table["domains"].items(),
        *(("[" + k + "]", v) for k, v in table["splits"].items()),
    ]:
        print(f"{name:<20}{entry['n']:>7}{entry['accuracy']:>10.3f}")
    print(f"{'overall':<20}{table['overall']['n']:>7}{table['overall']['accuracy']:>10.3f}")


# --- the stage ---------------------------------------------------------------------------------


def load_generator(cfg, device=None):
    """(model, tokenizer) for data.backend: hf (transformers, on `device` when given) or vllm."""
    tokenizer = load_tokenizer(cfg.model)
    if cfg.data.backend == "hf":
        return load_model(cfg.model, device=device), tokenizer
    if cfg.data.backend == "vllm":
        try:
            from vllm import LLM
        except ImportError:
            raise ConfigError(
                "data.backend=vllm needs vllm: pip install 'calibtune[vllm]'"
            ) from None
        from calibtune.models.loading import resolve_model_source

        llm = LLM(
            model=resolve_model_source(cfg.model.name_or_path),
            seed=int(cfg.seed),
            trust_remote_code=bool(cfg.model.trust_remote_code),
        )
        return llm, tokenizer
    raise ConfigError(f"data.backend={cfg.data.backend!r}; choose hf or vllm")


def run_data_stage(cfg: DictConfig) -> Path:
    """Build the labeled confidence set into cfg.data.output_dir and return that path."""
    check_config(cfg)
    out_dir = Path(cfg.data.output_dir)
    group = process_group(str(cfg.model.device))  # several processes: each answers chunks
    set_seed(int(cfg.seed))
    num_shards = int(cfg.data.num_shards)
    shards = range(num_shards) if cfg.data.shard is None else [int(cfg.data.shard)]
    if num_shards < 1 or any(not 0 <= s < num_shards for s in shards):
        raise ConfigError(
            f"data.shard={cfg.data.shard} must lie in [0, data.num_shards={num_shards})"
        )

    rows = assign_splits(
        filter_domains(load_qa_rows(cfg.dataset), cfg.data), cfg.data, int(cfg.seed)
    )
    check_leakage(rows)
    partial = out_dir / PARTIAL / build_fingerprint(cfg, rows)

    todo = [s for s in shards if not (shard_dir_of(partial, s, num_shards) / "done.json").is_file()]
    pool = answer_pool(cfg)  # data.pool_dir: answers shared with runs of other splits
    if todo:
        model, tokenizer = load_generator(cfg, group.device if group is not None else None)
        total = sum(len(shard_rows(rows, s, num_shards)) for s in todo)
        show = bool(cfg.data.progress) and is_rank_zero()
        bar = tqdm(total=total, desc="answers", unit="ans", disable=not show)
        started = time.perf_counter()
        for shard in todo:
            shard_dir = shard_dir_of(partial, shard, num_shards)
            labeled = answer_shard(
                model,
                tokenizer,
                shard_rows(rows, shard, num_shards),
                cfg,
                shard_dir,
                bar,
                group,
                pool,
            )
            if is_rank_zero():
                write_part(shard_dir / "shard.jsonl", labeled, cfg)
                done = {"n": len(labeled.rows), "work": dict(labeled.work)}
                write_json_atomic(shard_dir / "done.json", done)
        bar.close()
        elapsed = time.perf_counter() - started
        log.info(
            "answered %d questions in %.1f s (%.2f answers/s)",
            total,
            elapsed,
            total / max(elapsed, 1e-9),
        )

    if not is_rank_zero():
        return out_dir
    if not cfg.data.merge:
        print(f"shard(s) {list(shards)} done; data.merge=false leaves the merge to a later run")
        return out_dir
    missing = [
        s
        for s in range(num_shards)
        if not (shard_dir_of(partial, s, num_shards) / "done.json").is_file()
    ]
    if missing:
        print(f"shard(s) {shards} done; waiting for {len(missing)} more before merging: {missing}")
        return out_dir
    parts = []
    for shard in range(num_shards):
        shard_dir = shard_dir_of(partial, shard, num_shards)
        part = read_part(shard_dir / "shard.jsonl", cfg)
        if part is None:
            raise InputError(shard_dir, None, None, "a finished shard lacks its rows or signals")
        part.work.update(json.loads((shard_dir / "done.json").read_text()).get("work", {}))
        parts.append(part)
    labeled = join_parts(parts)
    if pool is not None:
        pool.add(labeled)
    manifest = write_labeled_set(
        cfg, out_dir, labeled.rows, signals=labeled.signals, work=labeled.work
    )
    save_config(cfg, out_dir / "config.yaml")
    shutil.rmtree(out_dir / PARTIAL, ignore_errors=True)
    print_accuracy(manifest, out_dir)
    return out_dir
