"""`python -m toy.experiment --config toy/configs/toy.yaml`: the toy-world proof of mechanism (issue 7).

Built only on public doors: the judge is a `reward.kind` Scorer, the rounds are `game.play` with hooks, and
evaluations read the store and write their own `evals` table (`toy.sql`).

1. Warm-up (`toy.warmup`), once per seed: a tiny model learns the world named by `reward.model` (a category
   file) and plays both attacker and defender; it also writes the seed, static and held-out prompt sets. Each
   seed has its own, so the spread over seeds includes the init's; evaluation sampling seeds are hashed from
   the run seed and what is sampled, like request seeds.
2. Arms, each seed its own run dir `<run.dir>/<arm>/seed-<s>/` (one DuckDB store per run), `run.rounds` rounds
   of the real pipeline (`game.play`: generate.round -> train.defender -> train.attacker):
   - `game`: GPO attacker + GPO selection, attacker reward = failure + λ·diversity (λ from the config);
   - `game_eva`: eva's evolving attacker + eva's max−min-gap selection;
   - `game_lambda0`: `game` with λ = 0 (the diversity ablation);
   - `static`: the same defender budget (prompts, samples, DPO) on a fixed prompt set; no attacker training.
   A run that fails (e.g. a store problem) is recorded in the experiment's JSON and the others go on; a round
   with no pair carries the defender over (`train_defender.on_zero_pairs: carry_over`) and the report shows it.
3. Evaluations, written to the run's store (`evals` table) and read back by `toy.report`:
   - `heldout`: held-out prompts (templates and subjects never trained on) answered by each round's defender
     (round R+1 = the defender trained on the last round), judged;
   - `attack_before` / `attack_after`: round r's attack instructions given to the attacker that played round r
     and to the one trained on round r (same sampling seeds), answered by round r's defender: acceptance (a).
   Evaluations sample with transformers `generate` (no engine start-up for a few hundred tiny generations).
4. `toy.report` writes `<run.dir>/REPORT.md` with the comparison table and plots.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pyarrow as pa

from core.adapters import load_causal_lm
from core.config import SparringConfig
from core.errors import ConfigError, SparringError
from data import sql as store_sql
from data.prompts import load_seed_file, prompt_id
from data.records import PromptRecord, to_arrow
from data.store import STORE_FILE, Store
from game.play import RoundHooks, play, redo_attacker_step
from generate.engine import request_seed
from toy import sql
from toy.judge import KIND, ToyJudge
from toy.world import load_world

log = logging.getLogger(__name__)

ARMS = ("game", "static", "game_eva", "game_lambda0")
PROBE_INSTRUCTIONS = 12  # distinct attack instructions per attack probe
PROBE_SAMPLES = 4  # prompts the attacker writes per instruction in a probe


@dataclass(frozen=True)
class Arm:
    name: str
    mode: str = "gpo"
    strategy: str = "gpo"
    diversity_weight: float | None = None  # None = the config's
    static: bool = False


ARM_SPECS = {
    "game": Arm("game"),
    "static": Arm("static", static=True),
    "game_eva": Arm("game_eva", mode="eva", strategy="eva"),
    "game_lambda0": Arm("game_lambda0", diversity_weight=0.0),
}


def warm_dir_of(cfg: SparringConfig, seed: int) -> Path:
    """Each seed warms up its own model (seeded init and data), so the spread over seeds includes init."""
    return Path(cfg.run.dir) / "warmup" / f"seed-{seed}"


def arm_config(cfg: SparringConfig, arm: Arm, seed: int) -> SparringConfig:
    """The config of one run: the seed's warm-up model plays both roles; the arm sets the recipe."""
    warm_dir = warm_dir_of(cfg, seed)
    policy = warm_dir / "policy"
    r = dataclasses.replace
    return r(
        cfg,
        run=r(cfg.run, dir=str(Path(cfg.run.dir) / arm.name / f"seed-{seed}"), seed=seed),
        attacker=r(cfg.attacker, model=str(policy), mode=arm.mode, seed_file=str(warm_dir / "seeds.jsonl")),  # type: ignore[arg-type]
        defender=r(cfg.defender, model=str(policy)),
        select=r(cfg.select, strategy=arm.strategy),  # type: ignore[arg-type]
        train_attacker=r(
            cfg.train_attacker,
            diversity_weight=cfg.train_attacker.diversity_weight
            if arm.diversity_weight is None
            else arm.diversity_weight,
        ),
    )


def run_experiment(
    cfg: SparringConfig, arms: list[str], seeds: list[int], report: bool = True
) -> dict[str, Any]:
    """Warm up, play every (arm, seed), evaluate, and write the report; every step resumes."""
    from toy.warmup import warmup

    if cfg.reward.kind != KIND:
        raise ConfigError(f"reward.kind={cfg.reward.kind!r}; the toy experiment expects {KIND}")
    unknown = [a for a in arms if a not in ARM_SPECS]
    if unknown:
        raise ConfigError(f"unknown arm '{unknown[0]}'; expected one of: {', '.join(ARM_SPECS)}")
    root = Path(cfg.run.dir)
    timings: dict[str, float] = {}
    failed: dict[str, str] = {}
    for seed in seeds:
        warm_dir = warm_dir_of(cfg, seed)
        warmup(cfg.reward.model, warm_dir, seed=seed)
        for name in arms:
            started = time.perf_counter()
            key = f"{name}/seed-{seed}"
            try:
                play_arm(arm_config(cfg, ARM_SPECS[name], seed), ARM_SPECS[name], warm_dir)
            except SparringError as e:  # one bad run never stops the others; the report lists it
                failed[key] = str(e)
                log.warning("%s failed, going on with the other runs: %s", key, e)
            timings[key] = time.perf_counter() - started
            log.info("%s done in %.0fs", key, timings[key])
    meta = {
        "arms": arms,
        "seeds": seeds,
        "rounds": cfg.run.rounds,
        "world": cfg.reward.model,
        "seconds": timings,
        "failed": failed,
    }
    (root / f"experiment-{'-'.join(arms)}.json").write_text(json.dumps(meta, indent=2))
    if report:
        from toy.report import write_report

        write_report(root)
    return meta


def play_arm(cfg: SparringConfig, arm: Arm, warm_dir: Path) -> None:
    """`run.rounds` rounds of one arm through `game.play`, each followed by its evaluations and training."""
    heldout = [(s.category, s.text) for s in load_seed_file(warm_dir / "heldout.jsonl")]
    # the static baseline's fixed prompts: as many as the attacker writes per round, spread over categories
    static = load_world(cfg.reward.model).train_set(cfg.attacker.num_prompts, seed=2)

    def evaluate(c: SparringConfig, round_: int) -> None:
        evaluate_heldout(c, round_, heldout)

    hooks = RoundHooks(after_round=evaluate, after_attacker=probe_attack, after_game=evaluate)
    if arm.static:
        hooks = dataclasses.replace(hooks, before_round=lambda c, r: _store_static_prompts(c, r, static))
    play(cfg, train_last=True, train_attackers=not arm.static, hooks=hooks)


def _store_static_prompts(cfg: SparringConfig, round_: int, prompts: list[tuple[str, str]]) -> None:
    """The static baseline's `attack` stage: the same fixed prompts every round, no attacker involved."""
    with Store.for_run(cfg.run.dir) as store:
        if store.stage_done(round_, "attack"):
            return
        records = [
            PromptRecord(prompt_id(round_, text), round_, i, text, cat, None, "static")
            for i, (cat, text) in enumerate(prompts)
        ]
        with store.stage(round_, "attack") as result:
            result.rows = store.insert("prompts", to_arrow(records, PromptRecord))
            result.details = {"mode": "static"}


# ---------------------------------------------------------------------------------------------------------
# Evaluations (transformers sampling; scored by the judge; stored in `evals`)


def sample(
    model_path: str,
    prompts: list[str],
    n: int,
    temperature: float,
    top_p: float,
    max_tokens: int,
    seed: int,
    batch: int = 32,
) -> list[list[str]]:
    """`n` sampled chat completions per prompt from a local model (seeded: the same call gives the same text)."""
    import torch
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_path)
    tok.padding_side = "left"
    model = load_causal_lm(model_path, torch.float32).eval()  # a trained player may be a LoRA adapter
    end = tok.convert_tokens_to_ids("<|im_end|>")
    out: list[list[str]] = []
    torch.manual_seed(seed)
    for start in range(0, len(prompts), batch):
        chunk = prompts[start : start + batch]
        texts = [
            tok.apply_chat_template(
                [{"role": "user", "content": p}], add_generation_prompt=True, tokenize=False
            )
            for p in chunk
        ]
        enc = tok(texts, return_tensors="pt", padding=True, add_special_tokens=False)
        with torch.inference_mode():
            gen = model.generate(
                **enc,
                do_sample=True,
                temperature=temperature,
                top_p=top_p,
                max_new_tokens=max_tokens,
                num_return_sequences=n,
                pad_token_id=tok.pad_token_id,
                eos_token_id=end,
            )
        width = enc["input_ids"].shape[1]
        decoded = [tok.decode(g[width:], skip_special_tokens=True).strip() for g in gen]
        out += [decoded[i * n : (i + 1) * n] for i in range(len(chunk))]
    return out


def _write_evals(cfg: SparringConfig, round_: int, kind: str, rows: list[dict[str, Any]]) -> None:
    with Store.for_run(cfg.run.dir) as store:
        store.execute(sql.EVALS_SCHEMA)
        with store.transaction():
            store.insert_with(sql.INSERT_EVALS, pa.Table.from_pylist(rows))


def _eval_done(cfg: SparringConfig, round_: int, kind: str) -> bool:
    with Store.for_run(cfg.run.dir) as store:
        store.execute(sql.EVALS_SCHEMA)
        return int(store.scalar(sql.EVAL_DONE, [round_, kind])) > 0


def _defender_of(store: Store, cfg: SparringConfig, round_: int) -> str:
    info = store.round_info(round_)
    if info is not None:
        return str(info["defender_model"])
    trained = store.model_for("defender", round_)
    if trained is None:
        raise ConfigError(f"no defender for round {round_} in {cfg.run.dir}")
    return trained


def evaluate_heldout(cfg: SparringConfig, round_: int, heldout: list[tuple[str, str]]) -> None:
    """Held-out prompts answered `defender.n` times by the defender that plays round `round_`, judged."""
    if _eval_done(cfg, round_, "heldout"):
        return
    with Store.for_run(cfg.run.dir, read_only=True) as store:
        defender = _defender_of(store, cfg, round_)
    d = cfg.defender
    prompts = [text for _, text in heldout]
    answers = sample(
        defender,
        prompts,
        d.n,
        d.temperature,
        d.top_p,
        d.max_tokens,
        request_seed(cfg.run.seed, "heldout", round_),
    )
    judge = ToyJudge(cfg)
    flat = [(cat, p, a) for (cat, p), group in zip(heldout, answers, strict=True) for a in group]
    rewards = judge.score([p for _, p, _ in flat], [a for _, _, a in flat])
    rows = [
        dict(round=round_, kind="heldout", idx=i, attacker_model=None, defender_model=defender, prompt=p,
             category=cat, response=a, reward=float(r))
        for i, ((cat, p, a), r) in enumerate(zip(flat, rewards, strict=True))
    ]  # fmt: skip
    _write_evals(cfg, round_, "heldout", rows)
    log.info("round %d: held-out reward %.3f", round_, sum(rewards) / len(rewards))


def probe_attack(cfg: SparringConfig, round_: int) -> None:
    """Acceptance (a): round r's instructions to the attacker before and after its round-r step; same defender."""
    with Store.for_run(cfg.run.dir, read_only=True) as store:
        info = store.round_info(round_)
        after = store.scalar(store_sql.MODEL_FOR_ROUND, [round_, "attacker"])
        instructions = store.rows(sql.ROUND_INSTRUCTIONS, [round_])[:PROBE_INSTRUCTIONS]
    if info is None or after is None or not instructions:
        return
    judge = ToyJudge(cfg)
    a, d = cfg.attacker, cfg.defender
    for kind, attacker in (("attack_before", info["attacker_model"]), ("attack_after", after)):
        if _eval_done(cfg, round_, kind):
            continue
        written = sample(
            attacker, [r["instruction"] for r in instructions], PROBE_SAMPLES, a.temperature, a.top_p,
            a.max_tokens, request_seed(cfg.run.seed, "probe-attacker", round_),
        )  # fmt: skip
        prompts = [p for group in written for p in group]
        answers = sample(
            info["defender_model"],
            prompts,
            d.n,
            d.temperature,
            d.top_p,
            d.max_tokens,
            request_seed(cfg.run.seed, "probe-defender", round_),
        )
        flat = [(p, x) for p, group in zip(prompts, answers, strict=True) for x in group]
        rewards = judge.score([p for p, _ in flat], [x for _, x in flat])
        rows = [
            dict(round=round_, kind=kind, idx=i, attacker_model=attacker, defender_model=info["defender_model"],
                 prompt=p, category=judge.world.classify(p), response=x, reward=float(r))
            for i, ((p, x), r) in enumerate(zip(flat, rewards, strict=True))
        ]  # fmt: skip
        _write_evals(cfg, round_, kind, rows)
        below = cfg.reward.failure_threshold()
        if below is not None:
            log.info(
                "round %d: %s attack success %.3f",
                round_,
                kind,
                sum(r < below for r in rewards) / max(1, len(rewards)),
            )


def ablation_name(weight: float, cfg: SparringConfig) -> str:
    """`lambda0-T0.5-ep2-lr0.001`: the λ and the attacker-step recipe, so ablations under `--set
    train_attacker.*` overrides land beside the config's instead of on top of them (`toy.report` reads it back)."""
    t = cfg.train_attacker
    return f"lambda{weight:g}-T{t.weight_temperature:g}-ep{t.epochs:g}-lr{t.learning_rate:g}"


def diversity_ablation(cfg: SparringConfig, weight: float = 0.0) -> Path:
    """Acceptance (d), one step at a time: redo each round's attacker step of a finished `game` run with
    λ = `weight`, from the same parent on the same prompts, and probe it again (`attack_after`).

    Works on a copy of the run's store under `<experiment>/ablations/<ablation_name>/seed-<s>/`; rounds are redone
    last to first so every step starts from the game's own attacker of the round before (`start_from: last`).
    """
    src = Path(cfg.run.dir)
    dst = src.parent.parent / "ablations" / ablation_name(weight, cfg) / src.name
    if (dst / "DONE").is_file():
        return dst
    dst.mkdir(parents=True, exist_ok=True)
    shutil.copy(src / STORE_FILE, dst / STORE_FILE)
    shadow = dataclasses.replace(
        cfg,
        run=dataclasses.replace(cfg.run, dir=str(dst)),
        train_attacker=dataclasses.replace(cfg.train_attacker, diversity_weight=weight),
    )
    with Store.for_run(dst) as store:
        store.execute(sql.DELETE_EVALS_OF_KIND, ["attack_after"])
    for round_ in range(cfg.run.rounds, 0, -1):
        redo_attacker_step(shadow, round_)
        probe_attack(shadow, round_)
    (dst / "DONE").write_text("ok\n")
    return dst


def _lambdas(text: str) -> list[float]:
    """`--ablate-diversity 0,5` -> [0.0, 5.0]; a one-line error naming the bad value otherwise."""
    try:
        weights = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        weights = []
    if not weights or any(not w >= 0 for w in weights):
        raise ConfigError(f"--ablate-diversity {text!r}; expected comma-separated numbers >= 0, e.g. 0,5")
    return weights


def main() -> None:
    from core.cli import base_parser, config_from_args, main_guard, setup_logging

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument("--arms", default=",".join(ARMS), help=f"comma-separated, from: {', '.join(ARMS)}")
    parser.add_argument("--seeds", default="0,1,2", help="comma-separated run seeds")
    parser.add_argument("--no-report", action="store_true")
    parser.add_argument(
        "--ablate-diversity",
        nargs="?",
        const="0",
        metavar="LAMBDAS",
        help="after the arms: redo each game run's attacker steps with each λ (comma-separated, default 0) on the "
        "same data and probe them",
    )
    args = parser.parse_args()
    setup_logging(args.verbose)

    def go() -> None:
        cfg = config_from_args(args)
        load_world(cfg.reward.model)  # fail fast on a bad category file
        seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
        arms = [a.strip() for a in args.arms.split(",") if a.strip()]
        # parsed first: a bad list fails before hours of arms
        ablate = [] if args.ablate_diversity is None else _lambdas(args.ablate_diversity)
        meta = run_experiment(cfg, arms, seeds, report=not args.no_report and not ablate)
        if ablate:
            for weight in ablate:
                for seed in seeds:
                    diversity_ablation(arm_config(cfg, ARM_SPECS["game"], seed), weight)
            if not args.no_report:
                from toy.report import write_report

                write_report(cfg.run.dir)
        print(json.dumps(meta, indent=2))

    main_guard(go)


if __name__ == "__main__":
    main()
