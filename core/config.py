"""Experiment config: frozen dataclasses loaded from one YAML file plus dotted `--set key=value` overrides.

Every knob of every stage lives here, so a run is fully described by its YAML and the overrides, which are
stored with each round. Unknown keys and wrong types are errors, never silently ignored.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import types
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, get_args, get_origin

import yaml

from core.errors import ConfigError
from core.yamlfile import check_expansion, load_mapping

# ---------------------------------------------------------------------------------------------------------
# Sections


@dataclass(frozen=True)
class RunConfig:
    dir: str = "runs/demo"  # one DuckDB store and all models of a run live here
    seed: int = 0
    rounds: int = 2  # how many rounds `make demo` / the experiment plays
    tiny_models_dir: str = ".sparring/tiny-models"  # cache for `tiny:*` model references


@dataclass(frozen=True)
class VllmConfig:
    """Arguments for `vllm.LLM`; `extra` is passed through verbatim (e.g. quantization, max_num_seqs)."""

    dtype: str = "auto"
    max_model_len: int = 512
    gpu_memory_utilization: float = 0.85
    tensor_parallel_size: int = 1
    pipeline_parallel_size: int = 1
    distributed_executor_backend: str | None = None  # "mp" or "ray" (multi-node)
    enforce_eager: bool = False
    # trained players are LoRA adapters on their base model (core.adapters), served by one engine through
    # LoRARequests with no merge or reload between rounds; false: merge each adapter and load the merged model
    serve_adapters: bool = True
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class AttackerConfig:
    """The attacker writes the round's prompts. `mode` picks the paper's recipe (GPO or eva)."""

    model: str = "tiny:policy"  # Hub id, local path, or tiny:<name> (built locally)
    mode: Literal["gpo", "eva"] = "gpo"
    num_prompts: int = 32  # target prompts per round after cleaning and de-duplication
    samples_per_parent: int = 4  # eva evolves each informative prompt 4 times
    seed_file: str = "data/seeds.jsonl"
    temperature: float = 0.8  # GPO launch script: T=0.8, top-p 0.9
    top_p: float = 0.9
    max_tokens: int = 64
    min_chars: int = 8  # shorter generations are dropped as degenerate
    max_attempts: int = 3  # extra sampling passes when de-duplication leaves too few prompts
    replay_fraction: float = 0.0  # eva mixes old prompts back in (paper: 0.2 original : 0.8 evolved)


@dataclass(frozen=True)
class ResampleConfig:
    """Dynamic sampling (DAPO, arXiv 2503.14476; offline: best-of-N rejection sampling): prompts whose answers
    tie, or whose best answer is still a failure, get more answers until the rewards spread or the budget is
    spent, so the prompts where the attacker won still give DPO a pair."""

    max_samples: int = 0  # answers per prompt at most, the first `defender.n` included; 0 = off
    passes: int = 1  # extra vLLM passes; each gives every still-triggered prompt an equal share of the budget
    temperature: float | None = None  # None = defender.temperature; higher spreads the answers more
    failures: bool = (
        False  # also resample prompts whose best answer is a failure (reward.failure_threshold())
    )


@dataclass(frozen=True)
class DefenderConfig:
    """The defender answers each prompt `n` times (`SamplingParams(n=n)`, one request per prompt)."""

    model: str = "tiny:policy"
    n: int = 4
    temperature: float = 0.7  # eva: 6 samples, T=0.7, top-p 0.9
    top_p: float = 0.9
    max_tokens: int = 64
    resample: ResampleConfig = field(default_factory=ResampleConfig)


@dataclass(frozen=True)
class GuardConfig:
    """How a guard classifier (`reward.kind: guard`) is asked and read. A guard is a causal LM that answers a
    (prompt, response) conversation with a label word; GPO's defender reward is such a classifier's P(safe)
    (Llama Guard in the authors' code). The score comes from the next-token distribution after the rendered
    conversation (+ `answer_prefix`): `p_safe` = P(safe_label) / (P(safe_label) + P(unsafe_label)), or
    `log_odds` = log P(safe_label) − log P(unsafe_label). Each label must be one token of the guard's vocabulary.

    Models differ by config, not code (docs/config.md has the three):
    - Llama Guard: `template: ""` (its chat template renders the whole task), labels `safe` / `unsafe`;
    - ShieldGemma: `template` = its policy question with `{prompt}` and `{response}`, `chat: true`, labels
      `No` / `Yes` (it is asked whether the response violates the policy);
    - WildGuard: `template` = its instruction text ending in "Harmful response:", `chat: false`, labels
      ` no` / ` yes`."""

    template: str = ""  # "" = the guard's chat template over [user: prompt, assistant: response]
    chat: bool = True  # a template is sent as one user turn through the chat template; false = verbatim
    answer_prefix: str = ""  # what the guard writes before its label
    safe_label: str = "safe"
    unsafe_label: str = "unsafe"
    output: Literal["p_safe", "log_odds"] = "p_safe"


@dataclass(frozen=True)
class ScorerPart:
    """One part of `reward.kind: combined`: a scorer of its own, stored under `name`, weighted in the sum."""

    name: str = ""
    kind: str = "reward_model"  # reward_model | guard | package.module:ClassName
    model: str = "tiny:reward"
    weight: float = 1.0
    guard: GuardConfig = field(default_factory=GuardConfig)


@dataclass(frozen=True)
class RewardConfig:
    """The scorer. `reward_model`: a one-label sequence classifier; `guard`: a guard classifier's label
    probabilities (`reward.guard`); `combined`: the weighted sum of `parts` (e.g. a guard for safety plus a
    reward model for helpfulness); `package.module:ClassName`: any `score.scorer.Scorer` (the toy world's judge
    is `toy.judge:ToyJudge`)."""

    kind: str = "reward_model"  # reward_model | guard | combined | package.module:ClassName (your own Scorer)
    model: str = "tiny:reward"
    batch_tokens: int = 8192  # padded tokens per forward pass; batches are built from length-sorted rows
    max_length: int = 1024
    dtype: str = "auto"  # auto = bf16 on GPU, fp32 on CPU
    device: str = "auto"
    guard: GuardConfig = field(default_factory=GuardConfig)
    parts: list[ScorerPart] = field(default_factory=list)  # kind: combined
    failure_below: float | None = None  # an answer scored below this is a defender failure; None: see below

    def failure_threshold(self) -> float | None:
        """What "the defender failed" means for this scorer, the one rule the report's attack success, the
        resample stage and the toy experiment all use: a score below `failure_below`. Unset, a guard's rule is
        its midpoint (P(safe) < 0.5, log-odds < 0); a reward model's or a custom scorer's scale says nothing
        of failure, so they have none (attack success is then not reported) until `failure_below` is set; a
        combined scorer must set it."""
        if self.failure_below is not None:
            return self.failure_below
        if self.kind == "guard":
            return 0.5 if self.guard.output == "p_safe" else 0.0
        return None


@dataclass(frozen=True)
class SelectConfig:
    """Selection in SQL. gpo: lowest mean defender reward (GPO); eva: largest max-min reward gap (eva)."""

    strategy: Literal["gpo", "eva"] = "gpo"
    hard_fraction: float = 0.25  # eva keeps 25% of prompts
    margin: float = 0.0  # a pair needs chosen - rejected >= margin (and > 0: ties never pair)


@dataclass(frozen=True)
class LoraConfig:
    r: int = 16
    alpha: int = 32
    dropout: float = 0.0
    target_modules: list[str] = field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"]
    )


@dataclass(frozen=True)
class TrainDefenderConfig:
    """DPO on best-vs-worst pairs with TRL + a PEFT LoRA (reference = adapters off)."""

    loss: Literal["sigmoid", "ipo", "spac"] = "sigmoid"
    beta: float = 0.1
    spac_lambda: float = 1.0  # weight of SPAC's pessimism term
    learning_rate: float = 5e-5
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 512
    lr_scheduler: str = "cosine"
    warmup_ratio: float = 0.0
    gradient_checkpointing: bool = False
    precompute_ref_log_probs: bool = False
    start_from: Literal["last", "base"] = "last"  # continue from last round's defender or the base model
    lora: LoraConfig = field(default_factory=LoraConfig)
    report_to: str = "none"  # passed to TRL: tensorboard, wandb, ...
    bf16: str = "auto"  # auto = on when the GPU supports it
    save_steps: int = 50  # checkpoints to resume a killed run from
    spac_smoothing: float = 1.0  # kappa > 0 of SPAC's smoothed pessimism term (see train/losses.py)
    max_steps: int = -1  # > 0 caps optimizer steps (overrides epochs), e.g. for smoke tests
    # a round with no pair: `error` stops (exit 2); `carry_over` records the defender unchanged and goes on
    on_zero_pairs: Literal["error", "carry_over"] = "error"


@dataclass(frozen=True)
class TrainAttackerConfig:
    """Reward-weighted fine-tuning of the attacker on its own prompts (GPO's reward, offline)."""

    diversity_weight: float = 1.0  # lambda: reward = failure + lambda * diversity, both z-scored
    weight_temperature: float = 1.0  # weights = N * softmax(reward / T)
    learning_rate: float = 1e-4
    epochs: float = 1.0
    batch_size: int = 8
    grad_accum: int = 1
    max_length: int = 256
    start_from: Literal["last", "base"] = "last"
    lora: LoraConfig = field(default_factory=LoraConfig)
    report_to: str = "none"
    bf16: str = "auto"
    save_steps: int = 50
    diversity_ngrams: int = 2  # novelty compares word 1..n-grams with the round's and earlier rounds' prompts
    ngram_weight: float = 5.0  # GPO's code: 5 x SelfBLEU ...
    embedding_weight: float = 1.0  # ... + 1 x sentence-embedding cosine, both against earlier attacks
    embedding_model: str = (
        "hashing"  # "hashing" (no model: cosine of bags of word 1..2-grams) or a sentence-embedding model
    )
    history: bool = True  # novelty also against every earlier round's prompts, not only within the round
    ess_floor: float = (
        0.5  # weights keep an effective sample size >= ess_floor x prompts (T raised if needed)
    )
    max_steps: int = -1  # > 0 caps optimizer steps (overrides epochs)


@dataclass(frozen=True)
class HubConfig:
    repo: str = ""  # ORG/NAME
    private: bool = False
    license: str = "apache-2.0"


@dataclass(frozen=True)
class SparringConfig:
    run: RunConfig = field(default_factory=RunConfig)
    vllm: VllmConfig = field(default_factory=VllmConfig)
    attacker: AttackerConfig = field(default_factory=AttackerConfig)
    defender: DefenderConfig = field(default_factory=DefenderConfig)
    reward: RewardConfig = field(default_factory=RewardConfig)
    select: SelectConfig = field(default_factory=SelectConfig)
    train_defender: TrainDefenderConfig = field(default_factory=TrainDefenderConfig)
    train_attacker: TrainAttackerConfig = field(default_factory=TrainAttackerConfig)
    hub: HubConfig = field(default_factory=HubConfig)

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @property
    def run_dir(self) -> Path:
        return Path(self.run.dir)


# ---------------------------------------------------------------------------------------------------------
# What each stage's output depends on. A stage records these values with its stage-log row; resuming a round
# with other values for a done stage's keys is an error (the store would mix two configs), `--force STAGE` the
# way out. The players (`attacker.model`, `defender.model`) are recorded as the models that actually played.

_SAMPLING = ("temperature", "top_p", "max_tokens")
STAGE_KEYS: dict[str, tuple[str, ...]] = {
    "attack": (
        "run.seed",
        *(f"attacker.{k}" for k in ("mode", "num_prompts", "samples_per_parent", "seed_file", *_SAMPLING)),
        *(f"attacker.{k}" for k in ("min_chars", "max_attempts", "replay_fraction")),
    ),
    "respond": ("run.seed", "defender.n", *(f"defender.{k}" for k in _SAMPLING), "vllm.max_model_len"),
    "score": ("reward.kind", "reward.model", "reward.max_length", "reward.guard", "reward.parts"),
    "resample": ("run.seed", "defender.resample", *(f"defender.{k}" for k in _SAMPLING), "select.margin"),
    "select": ("select.strategy", "select.hard_fraction", "select.margin"),
    "train_defender": tuple(
        f"train_defender.{k}"
        for k in "loss beta spac_lambda spac_smoothing learning_rate epochs batch_size grad_accum max_length "
        "start_from lora max_steps".split()
    )
    + ("vllm.serve_adapters",),
    "train_attacker": tuple(
        f"train_attacker.{k}"
        for k in "diversity_weight weight_temperature learning_rate epochs batch_size grad_accum max_length "
        "start_from lora diversity_ngrams ngram_weight embedding_weight embedding_model history ess_floor "
        "max_steps".split()
    )
    + ("vllm.serve_adapters",),
}


def stage_config(cfg: SparringConfig, stage: str) -> dict[str, Any]:
    """The values of `STAGE_KEYS[stage]` in `cfg`, JSON-ready (sections as dicts)."""
    return {key: _plain(_get(cfg, key)) for key in STAGE_KEYS.get(stage, ())}


def _plain(value: Any) -> Any:
    """Sections (and lists of them) as dicts, JSON-ready."""
    if isinstance(value, list):
        return [_plain(v) for v in value]
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        return dataclasses.asdict(value)
    return value


# ---------------------------------------------------------------------------------------------------------
# Range checks that types alone cannot express: (section.key, predicate, what is expected)

_POSITIVE = "a number > 0"
SCORER_KINDS = ("reward_model", "guard", "combined")
_PATH = "a non-empty path or model name"
_CHECKS: list[tuple[str, typing.Callable[[Any], bool], str]] = [
    ("run.dir", lambda v: bool(v.strip()), _PATH),
    ("run.tiny_models_dir", lambda v: bool(v.strip()), _PATH),
    ("attacker.model", lambda v: bool(v.strip()), _PATH),
    ("attacker.seed_file", lambda v: bool(v.strip()), _PATH),
    ("defender.model", lambda v: bool(v.strip()), _PATH),
    ("reward.model", lambda v: bool(v.strip()), _PATH),
    ("attacker.num_prompts", lambda v: v > 0, "an integer > 0"),
    ("attacker.samples_per_parent", lambda v: v > 0, "an integer > 0"),
    ("attacker.max_tokens", lambda v: v > 0, "an integer > 0"),
    ("attacker.max_attempts", lambda v: v > 0, "an integer > 0"),
    ("attacker.temperature", lambda v: v >= 0, "a number >= 0"),
    ("attacker.top_p", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("attacker.replay_fraction", lambda v: 0 <= v < 1, "a number in [0, 1)"),
    ("defender.n", lambda v: v >= 2, "an integer >= 2 (pairs need two responses per prompt)"),
    ("defender.max_tokens", lambda v: v > 0, "an integer > 0"),
    # vLLM refuses greedy sampling (temperature 0) with n > 1, and n >= 2 always here
    ("defender.temperature", lambda v: v > 0, "a number > 0 (n >= 2 samples need sampling, not greedy)"),
    ("defender.top_p", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("defender.resample.max_samples", lambda v: v >= 0, "an integer >= 0 (0 = off)"),
    ("defender.resample.passes", lambda v: v > 0, "an integer > 0"),
    ("defender.resample.temperature", lambda v: v is None or v > 0, "a number > 0, or null for defender's"),
    (
        "reward.kind",
        lambda v: v in SCORER_KINDS or _is_import_ref(v),
        "reward_model, guard, combined or package.module:ClassName",
    ),
    ("reward.batch_tokens", lambda v: v > 0, "an integer > 0"),
    ("reward.max_length", lambda v: v > 0, "an integer > 0"),
    ("select.hard_fraction", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("select.margin", lambda v: v >= 0, "a number >= 0"),
    ("run.rounds", lambda v: v > 0, "an integer > 0"),
    ("vllm.max_model_len", lambda v: v > 0, "an integer > 0"),
    ("vllm.gpu_memory_utilization", lambda v: 0 < v <= 1, "a number in (0, 1]"),
    ("vllm.tensor_parallel_size", lambda v: v > 0, "an integer > 0"),
    ("train_defender.beta", lambda v: v > 0, _POSITIVE),
    ("train_defender.learning_rate", lambda v: v > 0, _POSITIVE),
    ("train_defender.epochs", lambda v: v > 0, _POSITIVE),
    ("train_defender.batch_size", lambda v: v > 0, "an integer > 0"),
    ("train_defender.spac_lambda", lambda v: v >= 0, "a number >= 0"),
    ("train_attacker.learning_rate", lambda v: v > 0, _POSITIVE),
    ("train_attacker.epochs", lambda v: v > 0, _POSITIVE),
    ("train_attacker.batch_size", lambda v: v > 0, "an integer > 0"),
    ("train_attacker.weight_temperature", lambda v: v > 0, _POSITIVE),
    ("train_attacker.diversity_weight", lambda v: v >= 0, "a number >= 0"),
    ("train_attacker.ngram_weight", lambda v: v >= 0, "a number >= 0"),
    ("train_attacker.embedding_weight", lambda v: v >= 0, "a number >= 0"),
    ("train_attacker.ess_floor", lambda v: 0 <= v <= 1, "a number in [0, 1]"),
    ("train_attacker.diversity_ngrams", lambda v: v > 0, "an integer > 0"),
]


# ---------------------------------------------------------------------------------------------------------
# Loading


def load_config(
    path: str | Path | None = None, overrides: list[str] | tuple[str, ...] = ()
) -> SparringConfig:
    """Read YAML (or defaults when `path` is None), apply `key.sub=value` overrides, check types and ranges."""
    raw: dict[str, Any] = {}
    if path is not None:
        raw = load_mapping(
            path, "config file", "a YAML file such as configs/demo.yaml", "a mapping of sections", ConfigError
        )
    for item in overrides:
        _apply_override(raw, item)
    check_expansion(raw, "the config with its --set overrides", ConfigError)
    cfg = _build(SparringConfig, raw, "")
    for key, ok, expected in _CHECKS:
        value = _get(cfg, key)
        if isinstance(value, float) and not math.isfinite(value) or not ok(value):
            raise ConfigError(f"{key}={value!r} is out of range; expected {expected}")
    _check_across(cfg)
    return cfg


def _is_import_ref(kind: str) -> bool:
    module, _, name = kind.partition(":")
    return bool(module) and name.isidentifier() and all(p.isidentifier() for p in module.split("."))


# `vllm.LLM` arguments Sparring sets itself, and the config key each comes from: `vllm.extra` may not override
# them, or the store would record players and settings that did not play.
_OWNED_BY_SPARRING = {
    "model": "attacker.model / defender.model",
    "tokenizer": "attacker.model / defender.model (the model's own tokenizer)",
    "seed": "run.seed",
    "dtype": "vllm.dtype",
    "max_model_len": "vllm.max_model_len",
    "gpu_memory_utilization": "vllm.gpu_memory_utilization",
    "tensor_parallel_size": "vllm.tensor_parallel_size",
    "pipeline_parallel_size": "vllm.pipeline_parallel_size",
    "enforce_eager": "vllm.enforce_eager",
    "distributed_executor_backend": "vllm.distributed_executor_backend",
    "enable_lora": "vllm.serve_adapters",
    "max_lora_rank": "vllm.serve_adapters (sized from the players' adapters)",
    "max_loras": "vllm.serve_adapters",
}


def _check_across(cfg: SparringConfig) -> None:
    """Rules that tie two keys together, checked here so they fail before any engine loads (minutes)."""
    a = cfg.attacker
    # each attack request asks for n samples (gpo: samples_per_parent; eva: half per template, see
    # generate.attack._requests), and vLLM refuses greedy sampling with n > 1
    per_request = a.samples_per_parent if a.mode == "gpo" else math.ceil(a.samples_per_parent / 2)
    if a.temperature == 0 and per_request > 1:
        raise ConfigError(
            f"attacker.temperature=0.0 with attacker.samples_per_parent={a.samples_per_parent} is refused; "
            "expected temperature > 0 (greedy sampling repeats one text) or one sample per request"
        )
    for key in cfg.vllm.extra:
        if key in _OWNED_BY_SPARRING:
            raise ConfigError(
                f"vllm.extra.{key} is set by Sparring from {_OWNED_BY_SPARRING[key]}; expected that key instead "
                "(the store records what it says)"
            )
    _check_reward(cfg.reward)
    if cfg.defender.resample.failures and cfg.reward.failure_threshold() is None:
        raise ConfigError(
            f"defender.resample.failures=true needs a failure rule, and reward.kind={cfg.reward.kind!r} has none "
            "of its own; expected reward.failure_below (the score below which an answer is a failure)"
        )
    t = cfg.train_attacker
    if t.diversity_weight > 0 and t.ngram_weight + t.embedding_weight == 0:
        raise ConfigError(
            "train_attacker.ngram_weight=0 and embedding_weight=0 with diversity_weight > 0; expected a positive "
            "weight for at least one novelty term"
        )


def recorded_reward(config_json: str | None) -> RewardConfig:
    """The reward section of a round's recorded config (`rounds.config_json`), for readers of a store: keys a
    store predates take their defaults, a section that no longer parses reads as the default."""
    raw = json.loads(config_json or "{}").get("reward") or {}
    names = {f.name for f in dataclasses.fields(RewardConfig)}
    try:
        return _build(RewardConfig, {k: v for k, v in raw.items() if k in names}, "reward.")
    except ConfigError:
        return RewardConfig()


def _check_reward(r: RewardConfig) -> None:
    """Guard labels and template, and a combined scorer's parts, weights and failure rule."""
    guards = [("reward.guard", r.guard)] if r.kind == "guard" else []
    if r.kind != "combined" and r.parts:
        raise ConfigError(f"reward.parts is set but reward.kind={r.kind!r}; expected reward.kind: combined")
    if r.kind == "combined":
        if not r.parts:
            raise ConfigError(
                "reward.kind=combined has no reward.parts; expected a list of named, weighted scorers"
            )
        names = [p.name for p in r.parts]
        for i, part in enumerate(r.parts):
            key = f"reward.parts[{i}]"
            if not part.name.strip():
                raise ConfigError(
                    f"{key}.name={part.name!r} is empty; expected a name to store its scores under"
                )
            if names.count(part.name) > 1:
                raise ConfigError(f"{key}.name={part.name!r} is used twice; expected one name per part")
            if not (part.kind in ("reward_model", "guard") or _is_import_ref(part.kind)):
                raise ConfigError(
                    f"{key}.kind={part.kind!r} is not allowed; expected reward_model, guard or package.module:ClassName"
                )
            if not part.model.strip():
                raise ConfigError(f"{key}.model={part.model!r} is empty; expected {_PATH}")
            if not math.isfinite(part.weight) or part.weight < 0:
                raise ConfigError(
                    f"{key}.weight={part.weight!r} is out of range; expected a finite number >= 0"
                )
            if part.kind == "guard":
                guards.append((f"{key}.guard", part.guard))
        if sum(p.weight for p in r.parts) <= 0:
            raise ConfigError("reward.parts weights are all 0; expected at least one weight > 0")
        if r.failure_below is None:
            raise ConfigError(
                "reward.failure_below is not set for reward.kind=combined; expected the combined score below "
                "which an answer is a defender failure (e.g. 0.5 for a guard's P(safe) weighted 1)"
            )
    if r.failure_below is not None and not math.isfinite(r.failure_below):
        raise ConfigError(
            f"reward.failure_below={r.failure_below!r} is out of range; expected a finite number"
        )
    for key, g in guards:
        for label in ("safe_label", "unsafe_label"):
            if not getattr(g, label):
                raise ConfigError(f"{key}.{label}='' is empty; expected the guard's label word")
        if g.safe_label == g.unsafe_label:
            raise ConfigError(
                f"{key}.safe_label and unsafe_label are both {g.safe_label!r}; expected two labels"
            )
        missing = [f for f in ("{prompt}", "{response}") if g.template and f not in g.template]
        if missing:
            raise ConfigError(
                f"{key}.template has no {missing[0]}; expected both {{prompt}} and {{response}}"
            )


def _apply_override(raw: dict[str, Any], item: str) -> None:
    if "=" not in item:
        raise ConfigError(f"override '{item}' has no '='; expected KEY=VALUE such as defender.n=8")
    key, _, text = item.partition("=")
    parts = key.strip().split(".")
    if not all(parts):
        raise ConfigError(f"override key '{key}' is malformed; expected dotted names such as defender.n")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    node = raw
    for part in parts[:-1]:
        child = node.setdefault(part, {})
        if not isinstance(child, dict):
            raise ConfigError(f"override '{key}' goes inside '{part}', which is not a section")
        node = child
    node[parts[-1]] = value


def _build(cls: type, raw: Any, prefix: str) -> Any:
    name = prefix.rstrip(".") or "config"
    if not isinstance(raw, dict):
        raise ConfigError(f"'{name}' must be a mapping, got {type(raw).__name__} {raw!r}")
    hints = typing.get_type_hints(cls)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(raw) - set(fields))
    if unknown:
        raise ConfigError(f"unknown config key '{prefix}{unknown[0]}'; expected one of: {', '.join(fields)}")
    kwargs = {}
    for key, value in raw.items():
        kwargs[key] = _coerce(hints[key], value, f"{prefix}{key}")
    return cls(**kwargs)


# PyYAML follows YAML 1.1, where `1e-4` (no dot) is a string, not a float; users write learning rates that
# way all the time, so a float field accepts exactly that form instead of calling it the wrong type.
_EXPONENT_FLOAT = re.compile(r"[-+]?\d+[eE][-+]?\d+")


def _coerce(tp: Any, value: Any, key: str) -> Any:
    origin, args = get_origin(tp), get_args(tp)
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _build(tp, value, key + ".")
    if origin is Literal:
        if value not in args:
            raise ConfigError(f"{key}={value!r} is not allowed; expected one of: {', '.join(map(str, args))}")
        return value
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        inner = [a for a in args if a is not type(None)]
        return _coerce(inner[0], value, key)
    if tp is bool:
        if not isinstance(value, bool):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected true or false")
        return value
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected an integer")
        return value
    if tp is float:
        if isinstance(value, str) and _EXPONENT_FLOAT.fullmatch(value.strip()):
            return float(value)
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a number")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a string")
        return value
    if origin is list:
        if not isinstance(value, list):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a list")
        return [_coerce(args[0], v, f"{key}[{i}]") for i, v in enumerate(value)]
    if origin is dict:
        if not isinstance(value, dict):
            raise ConfigError(f"{key}={value!r} has the wrong type; expected a mapping")
        return dict(value)
    return value


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        cfg = getattr(cfg, part)
    return cfg
