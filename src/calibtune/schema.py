"""The typed shape of every stage's config, checked when it is composed (before any model loads
or any file is written).

One pydantic model per config group; the YAML files under `conf/` hold the defaults (one place
each), this file holds the types and the allowed values of every enumeration. Adding a config
key is one line here (its type); a key that is in a YAML file or an override but not here fails
with "unknown key". pydantic (not OmegaConf structured configs) because the enumerations are
`Literal` types, which OmegaConf does not check, and because the YAML stays the one place for
the defaults.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

NonNegInt = Field(ge=0)


class Group(BaseModel):
    """A config group: every key typed, no key unknown."""

    model_config = ConfigDict(extra="forbid", strict=False)


# -- enumerations (the implementing modules import these)

Method = Literal["alora", "alora_head", "lora", "probe"]
QueryStyle = Literal["followup", "restate"]
Recalibrator = Literal["temperature", "platt", "beta", "isotonic", "histogram"]
ConfidenceMethod = Literal[
    "base/ptrue", "tuned/ptrue", "base/pavg", "base/seqlogp", "base/pmin", "base/verbalized"
]
BestMetric = Literal["ece", "brier", "auroc", "val_loss"]
Grader = Literal[
    "exact",
    "numeric",
    "choice",
    "substring",
    "judge",
    "country",
    "continent",
    "symbol",
    "weekday",
    "month",
    "letter",
    "roman",
    "spelled_number",
]
SweepMetric = Literal[
    "val/ece",
    "val/brier",
    "val/auroc",
    "val/val_loss",
    "val/mean_confidence",
    "test/ece",
    "test/brier",
    "test/auroc",
    "accuracy/tuned",
    "accuracy_drop",
    "answer_agreement",
]


class ModelCfg(Group):
    name_or_path: str
    revision: str | None
    dtype: Literal["auto", "float32", "bfloat16", "float16"]
    device: str = Field(pattern=r"^(auto|cpu|mps|cuda(:\d+)?)$")
    attn_implementation: Literal["sdpa", "eager", "flash_attention_2", "flash_attention_3"]
    trust_remote_code: bool
    feature_layer: int = -1


class PromptCfg(Group):
    use_chat_template: bool
    system: str | None
    completion_prefix: str | None
    answer_template: str
    query_style: QueryStyle
    followup_template: str
    query_template: str
    query_yes: str
    query_no: str


class DatasetCfg(Group):
    name: str
    kind: Literal["builtin", "jsonl", "hf"]
    path: str | None = None  # jsonl and hf sources only
    config_name: str | None = None
    split: str | None = None
    revision: str | None = None
    data_files: Any = None
    mapping: Literal["triviaqa", "sciq", "arc", "commonsenseqa", "mmlu", "boolq"] | None = None
    domain: str | None = None


class MethodCfg(Group):
    name: Method


class ProbeCfg(Group):
    fit: Literal["logistic", "adamw"]
    strength_folds: Literal["auto", "entity", "domain"]
    temperature_folds: Literal["auto", "none", "entity", "domain"]
    answer_signals: bool
    hidden: int = NonNegInt
    dropout: float = Field(ge=0.0, lt=1.0)

    @model_validator(mode="after")
    def _logistic_is_linear(self) -> ProbeCfg:
        if self.fit == "logistic" and self.hidden:
            raise ValueError("probe.fit=logistic fits a linear head: set probe.hidden=0")
        if self.fit == "adamw" and self.temperature_folds not in ("auto", "none"):
            raise ValueError("probe.temperature_folds tempers the logistic fit: probe.fit=logistic")
        return self


class OptimCfg(Group):
    name: Literal["adamw"]
    lr: float = Field(gt=0.0)
    weight_decay: float = Field(ge=0.0)
    betas: tuple[float, float]
    eps: float = Field(gt=0.0)
    warmup: float = Field(ge=0.0)
    scheduler: Literal["cosine", "linear", "constant", "constant_with_warmup"]


class LoggerCfg(Group):
    name: Literal["none", "wandb"]
    mode: Literal["offline", "online", "disabled"] | None = None
    project: str | None = None
    entity: str | None = None
    group: str | None = None
    tags: list[str] = []


class DataCfg(Group):
    output_dir: str
    n_examples: int = Field(ge=1)
    val_size: int = NonNegInt
    test_size: int = NonNegInt
    include_domains: list[str]
    exclude_domains: list[str]
    holdout_domains: list[str]
    holdout_test_only: bool
    backend: Literal["hf", "vllm"]
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
    stop_strings: list[str]
    num_samples: int = Field(ge=1)
    temperature: float = Field(ge=0.0)
    grader: Literal["auto", Grader]
    shard: int | None = Field(ge=0)
    num_shards: int = Field(ge=1)
    batches_per_chunk: int = Field(ge=1)
    merge: bool  # false: answer this run's shard(s) only, a later shard=null run merges
    base_signals: bool  # record the base model's signals while answering (models/signals.py)
    pool_dir: str | None  # answer pool shared by runs of other splits (data/pool.py)
    progress: bool


class TrainCfg(Group):
    data_dir: str
    output_dir: str
    resume: str  # auto | never | <checkpoint dir>
    strategy: Literal["auto", "ddp", "fsdp2"]
    timeout_s: int = Field(ge=1)
    gradient_checkpointing: bool
    epochs: int = NonNegInt
    max_steps: int | None = Field(ge=1)
    max_examples: int | None = Field(ge=1)
    batch_size: int = Field(ge=1)
    micro_batch_size: int = Field(ge=1)
    beta: float = Field(ge=0.0)
    max_grad_norm: float | None = Field(gt=0.0)
    mixed_precision: Literal["auto", "no", "bf16", "fp16"]
    group_by_length: bool
    eval_every: int = NonNegInt
    eval_at_start: bool
    eval_batch_size: int = Field(ge=1)
    best_metric: BestMetric
    checkpoint_every: int = NonNegInt
    keep_last: int = Field(ge=1)
    log_every: int = Field(ge=1)
    progress: bool


class TokenTemperatureCfg(Group):
    low: float = Field(gt=0.0)
    high: float = Field(gt=0.0)
    steps: int = Field(ge=1)


class VerbalizedCfg(Group):
    enabled: bool
    max_examples: int | None = Field(ge=1)
    max_new_tokens: int = Field(ge=1)
    template: str


class DomainCalibrationCfg(Group):
    kind: Recalibrator
    min_count: int = Field(ge=1)
    shrinkage: Literal["auto"] | Annotated[float, Field(ge=0.0)] | None
    methods: list[ConfidenceMethod]
    add_train: Literal["auto"] | bool
    unseen: Literal["identity", "global"]  # what a domain absent from val gets at serve time

    @model_validator(mode="after")
    def shrinkage_needs_platt(self) -> DomainCalibrationCfg:
        if self.shrinkage is not None and self.kind != "platt":
            raise ValueError(f"shrinkage={self.shrinkage!r} needs kind=platt, got {self.kind!r}")
        return self


class PolicyCfg(Group):
    enabled: bool
    answer_risk: float = Field(gt=0.0, lt=1.0)
    escalate_risk: float = Field(gt=0.0, lt=1.0)
    delta: float = Field(gt=0.0, lt=1.0)
    unit: Literal["row", "group"]  # group: p-values over val's entity groups (population risk)
    batch_size: Literal["auto"] | int | None  # auto: the test split; null: population risk
    per_domain: bool
    min_count: int = Field(ge=1)


class EvalCfg(Group):
    data_dir: str
    adapter: str | None
    output_dir: str
    val_fraction: float = Field(gt=0.0, lt=1.0)
    max_examples: int | None = Field(ge=1)
    test_domains: list[str]
    batch_size: int = Field(ge=1)
    progress: bool
    n_bins: int = Field(ge=1)
    n_boot: int = NonNegInt
    baseline_train_max: int = NonNegInt
    baseline_probe: bool
    within_min_per_class: int = Field(ge=1)
    target_risk: float = Field(ge=0.0, le=1.0)
    recalibrators: list[Recalibrator]
    recalibrate_methods: list[ConfidenceMethod]
    token_temperature: TokenTemperatureCfg
    verbalized: VerbalizedCfg
    agreement_max_examples: int | None = Field(ge=1)
    domain_calibration: DomainCalibrationCfg
    policy: PolicyCfg


class ExportCfg(Group):
    output_dir: str
    metrics: str | None


class ScoreCfg(Group):
    input: str
    output: str
    batch_size: int = Field(ge=1)
    max_new_tokens: int = Field(ge=1)


class ServeCfg(Group):
    adapter: str | None
    model_dir: str | None
    calibrator: str | None  # auto | null | <calibrators.json>
    calibrator_name: str
    policy: str | None  # auto | null | <policy.json>
    export: ExportCfg
    score: ScoreCfg


class MonitorWindowCfg(Group):
    size: int = Field(ge=1)
    time: str | None  # 30m, 2h, 1d


class RefittingCfg(Group):
    kind: Recalibrator
    prior_strength: float = Field(ge=0.0)
    min_count: int = Field(ge=1)
    window: int = Field(ge=1)
    holdout_fraction: float = Field(gt=0.0, lt=1.0)
    metric: Literal["brier", "ece"]


class MonitorCfg(Group):
    input: str | None
    output_dir: str
    reference: str | None
    reference_method: str
    reference_split: Literal["test", "val"]
    reference_size: int = Field(ge=2)
    fail_on_alarm: bool
    false_alarm: float = Field(gt=0.0, lt=1.0)
    horizon: int | None = Field(ge=1)
    window: MonitorWindowCfg
    mix_window: int = Field(ge=2)
    unseen_min_count: int = Field(ge=1)
    min_domain_reference: int = Field(ge=2)
    n_bins: int = Field(ge=1)
    policy: str | None  # auto | null | <policy.json>
    refit: bool
    export: str
    refitting: RefittingCfg
    rollback: str | int | None  # previous | <version>


class AdaptCfg(Group):
    input: str
    output_dir: str
    family: Recalibrator
    prior_strength: float = Field(ge=0.0)
    write: Literal["better", "always"]
    min_labels: int = Field(ge=2)
    min_per_class: int = Field(ge=1)
    per_domain: bool
    min_count: int = Field(ge=1)
    folds: int = Field(ge=2)
    n_boot: int = NonNegInt
    n_bins: int = Field(ge=1)


class SweepCfg(Group):
    metric: SweepMetric
    direction: Literal["minimize", "maximize"]
    max_accuracy_drop: float | None = Field(ge=0.0)


class LodoCfg(Group):
    folds: int = Field(ge=2)
    domains: list[str]


class Config(Group):
    """A composed stage config: conf/common.yaml plus the command's `stage` (conf/<stage>.yaml)."""

    stage: Literal["data", "train", "eval", "run", "monitor", "adapt"]
    seed: int
    run_dir: str
    model: ModelCfg
    prompt: PromptCfg
    dataset: DatasetCfg
    method: MethodCfg
    lora: dict[str, Any] | None = None  # peft.LoraConfig kwargs (method lora / alora): PEFT checks
    probe: ProbeCfg | None = None  # method=probe
    optim: OptimCfg
    logger: LoggerCfg
    data: DataCfg
    train: TrainCfg
    eval: EvalCfg
    serve: ServeCfg
    monitor: MonitorCfg
    adapt: AdaptCfg  # calibtune adapt (stages/adapt.yaml)
    sweep: SweepCfg | None = None  # +sweep=...
    lodo: LodoCfg  # calibtune lodo (stages/lodo.yaml)
