"""`python -m data.push --round N --repo ORG/NAME`: publish one round of a run as a Hub dataset.

The round's three configs (`data.export`: `defender_dpo`, `attacker_sft`, `responses`) are written as split
`round_N` in the layout `Dataset.push_to_hub` uses (`<config>/round_N-0000i-of-0000n.parquet`), the dataset card
(`data.card`) is regenerated from the store for every round the repo holds, and all of it goes up in **one**
`HfApi.create_commit`, with the deletion of the split's old shards: a reader sees the round entirely or not at
all. Re-pushing a round replaces its files; a push that failed changed nothing, so run the same command again.

`--to-dir PATH` writes the same layout to a folder instead, with no network (parquet files under
`<config>/round_N-*.parquet` plus README.md), so `load_dataset(PATH, "defender_dpo", split="round_1")` works.
It is staged in a hidden folder next to PATH and swapped in at the end: a failure leaves PATH as it was
(`SPARRING_FAULT=push:swap` kills the process just before the swap, for the tests).

The token comes from `HF_TOKEN` or `hf auth login`'s stored token (`huggingface_hub.get_token()`), never
from the command line (it would land in shell history and process lists). It is handed to the clients and
nowhere else: not logged, not in the card, not in the store (which this command opens read-only).
"""

from __future__ import annotations

import importlib
import logging
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import datasets
from huggingface_hub import DatasetCard, HfApi, RepoFile, constants, get_token
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.utils import HFValidationError, validate_repo_id

from core import faults
from core.config import SparringConfig
from core.errors import ConfigError, SparringError, StageError
from data.card import RunFacts, build_card, dataset_info_metadata, run_facts, splits_from_metadata
from data.export import CONFIGS, export_round, split_name
from data.store import Store

log = logging.getLogger(__name__)

# A round can be published once it has pairs: every stage up to and including select.
ROUND_STAGES = ("attack", "respond", "score", "select")  # resample is optional: stores made before it exist
# Same as `Dataset.push_to_hub`'s default `max_shard_size` ("500MB"), so --to-dir shards like the Hub copy.
MAX_SHARD_BYTES = 500 * 10**6
REDACTED = "<redacted>"


class HubError(SparringError):
    """No token to push with, the Hub cannot be reached, or it refused the upload."""


@dataclass(frozen=True)
class PushResult:
    round: int
    target: str  # the repo id, or the --to-dir folder
    url: str  # where to look at it
    rows: dict[str, int] = field(default_factory=dict)

    def summary(self) -> str:
        counts = ", ".join(f"{config} {n} rows" for config, n in self.rows.items())
        return f"published round {self.round} ({split_name(self.round)}) to {self.url}: {counts}"


@dataclass(frozen=True)
class Release:
    """One round ready to publish: its datasets, the card's facts, the name users load it by and its licence."""

    round: int
    exported: Mapping[str, datasets.Dataset]
    facts: RunFacts
    source: str  # what `load_dataset` takes: the repo id, or the --to-dir folder
    license: str

    @property
    def rows(self) -> dict[str, int]:
        return {config: len(ds) for config, ds in self.exported.items()}


def push_round(
    cfg: SparringConfig,
    round_: int,
    repo: str | None = None,
    *,
    private: bool | None = None,
    commit_message: str | None = None,
    to_dir: str | Path | None = None,
    token: str | None = None,
) -> PushResult:
    """Publish round `round_` of the run in `cfg.run.dir` to `repo` on the Hub, or to the folder `to_dir`.

    `repo` defaults to `cfg.hub.repo` and `private` to `cfg.hub.private`; `token` to `get_token()`.
    Everything that can be checked locally is checked before the first request (repo id, round complete,
    token present), so a mistake costs no upload.
    """
    repo = target_repo(cfg, repo, to_dir)
    exported, facts = read_round(cfg, round_)
    if to_dir is None:
        token = token or get_token()
        if not token:
            raise HubError(
                "no Hugging Face token found; set HF_TOKEN or run `hf auth login` with a write token "
                "(or use --to-dir PATH to write the dataset locally)"
            )
    if facts.rounds[round_].attacker_rewards == 0:
        # Published anyway, with the same columns (so the round's splits still merge), and re-pushable.
        log.warning(
            "round %d's attacker has not been trained yet: attacker_sft %s has null reward and weight; "
            "run `python -m train.attacker --round %d` and push again to fill them",
            round_,
            split_name(round_),
            round_,
        )
    release = Release(round_, exported, facts, source=repo or str(to_dir), license=cfg.hub.license)
    if to_dir is not None:
        return write_dir(Path(to_dir), release)
    assert repo is not None and token is not None
    return push_hub(
        release,
        repo,
        token=token,
        private=cfg.hub.private if private is None else private,
        commit_message=commit_message,
    )


def target_repo(cfg: SparringConfig, repo: str | None, to_dir: str | Path | None) -> str | None:
    """The repo a push names (`--repo`, else `hub.repo`), checked; None only for a `--to-dir` export."""
    repo = repo or cfg.hub.repo or None
    if repo is not None:
        check_repo_id(repo)
    elif to_dir is None:
        raise ConfigError("no repo to push to; expected --repo ORG/NAME (or hub.repo in the config)")
    return repo


def check_repo_id(repo: str) -> None:
    """ORG/NAME, checked by huggingface_hub's own validator (the rules the Hub enforces)."""
    try:
        validate_repo_id(repo)
    except HFValidationError as e:
        raise ConfigError(f"--repo '{repo}' is not a valid Hub repo id ({e}); expected ORG/NAME") from None
    if repo.count("/") != 1:
        raise ConfigError(f"--repo '{repo}' has no organisation or user; expected ORG/NAME")


def read_round(cfg: SparringConfig, round_: int) -> tuple[dict[str, datasets.Dataset], RunFacts]:
    """The round's datasets and the card's facts, read in one go so the store is closed before uploading."""
    if round_ < 1:
        raise StageError(f"--round {round_} is not a round; expected an integer >= 1")
    with Store.for_run(cfg.run_dir, read_only=True) as store:
        require_complete(store, round_, cfg.run.dir)
        return export_round(store, round_), run_facts(store, cfg.run.dir)


def require_complete(store: Store, round_: int, run_dir: str) -> None:
    """Refuse a round that has not got through selection: its pairs would be missing or partial."""
    rerun = f"run `python -m generate.round --round {round_}` first"
    if store.round_info(round_) is None:
        raise StageError(f"round {round_} has not been played in run '{run_dir}'; {rerun}")
    missing = [s for s in ROUND_STAGES if not store.stage_done(round_, s)]
    if missing:
        raise StageError(
            f"round {round_} of run '{run_dir}' is not complete: stage(s) {', '.join(missing)} not in the "
            f"store; {rerun}"
        )


# ---- to the Hub -----------------------------------------------------------------------------------------


def push_hub(
    release: Release, repo: str, *, token: str, private: bool | None, commit_message: str | None
) -> PushResult:
    """Create the repo if needed, then one commit: this round's shards, the card, and the old shards' removal."""
    from huggingface_hub import CommitOperationAdd, CommitOperationDelete

    endpoint = constants.ENDPOINT
    api = HfApi(token=token)
    try:
        repo_url = api.create_repo(repo, repo_type="dataset", private=private, exist_ok=True)
        if private and not api.repo_info(repo, repo_type="dataset").private:
            log.warning("%s already exists and is public; --private only applies when creating a repo", repo)
        existing = {
            f.path: f.size
            for f in api.list_repo_tree(repo, repo_type="dataset", recursive=True)
            if isinstance(f, RepoFile)
        }
        previous = (
            DatasetCard.load(repo, repo_type="dataset", token=token) if "README.md" in existing else None
        )
        with tempfile.TemporaryDirectory(prefix="sparring-push-") as tmp:
            staging = Path(tmp)
            added = stage_round(staging, release, previous, existing, token=token)
            stale = [p for p in _split_files(existing, split_name(release.round)) if p not in added]
            log.info(
                "pushing round %d to %s: %d files, %d removed, one commit",
                release.round,
                repo,
                len(added),
                len(stale),
            )
            api.create_commit(
                repo,
                repo_type="dataset",
                operations=[CommitOperationAdd(path, staging / path) for path in added]
                + [CommitOperationDelete(path) for path in stale],
                commit_message=commit_message or f"Sparring round {release.round}",
                commit_description=f"Sparring: {', '.join(CONFIGS)} split {split_name(release.round)} and the "
                "dataset card",
            )
    except Exception as e:
        error = _hub_error(e, repo, endpoint, token)
        if error is None:
            raise
        raise error from None
    return PushResult(release.round, repo, str(repo_url), release.rows)


def stage_round(
    staging: Path,
    release: Release,
    previous: DatasetCard | None,
    existing: Mapping[str, int],
    *,
    token: str | None,
) -> list[str]:
    """Write this round's shards and the regenerated card into `staging`; returns the paths they take in the repo.

    `previous` is the target's card and `existing` its files (path -> bytes) before this push: the splits and
    sizes of the other rounds come from there, so the Hub and a `--to-dir` folder get the same card.
    """
    split = split_name(release.round)
    added = [
        f"{config}/{name}"
        for config, ds in release.exported.items()
        for name in _write_split(staging / config, split, ds)
    ]
    kept = {p: n for p, n in existing.items() if p not in _split_files(existing, split)}
    after = {**kept, **{p: (staging / p).stat().st_size for p in added}}
    splits = {
        c: sorted({Path(p).name.split("-")[0] for p in after if p.startswith(f"{c}/")}) for c in CONFIGS
    }
    sizes = {
        c: sum(n for p, n in after.items() if p.startswith(f"{c}/") and p.endswith(".parquet"))
        for c in CONFIGS
    }
    old = previous.data if previous is not None else None
    extra = [c for c in (old.get("configs") if old else None) or [] if c.get("config_name") not in CONFIGS]
    card = build_card(
        release.facts,
        splits,
        source=release.source,
        license=release.license,
        dataset_info=dataset_info_metadata(old, release.exported, split, sizes),
        extra_configs=extra,
    )
    (staging / "README.md").write_text(str(_redact(card, token)), encoding="utf-8")
    return [*added, "README.md"]


def _split_files(files: Iterable[str], split: str) -> list[str]:
    """The parquet shards of `split` among repo paths (`<config>/<split>-*.parquet`)."""
    return [p for p in files if p.split("/")[0] in CONFIGS and Path(p).name.startswith(f"{split}-")]


def _hub_error(e: Exception, repo: str, endpoint: str, token: str) -> HubError | None:
    """A one-line error for what the network or the Hub did; None for anything else (a bug: traceback)."""
    if isinstance(e, HfHubHTTPError):
        response = getattr(e, "response", None)
        status = getattr(response, "status_code", None)
        if status in (401, 403):
            text = (
                f"the Hub at {endpoint} rejected the token for '{repo}' (HTTP {status}); expected a write "
                "token in HF_TOKEN or from `hf auth login`"
            )
        else:
            text = f"the Hub at {endpoint} refused the push to '{repo}' (HTTP {status}): {_first_line(e)}"
    elif isinstance(e, _network_errors()):
        text = f"cannot reach the Hub at {endpoint}: {_first_line(e)}; check the network or HF_ENDPOINT"
    else:
        return None
    return HubError(text.replace(token, REDACTED) + "; re-run the same command once fixed")


def _network_errors() -> tuple[type[BaseException], ...]:
    """Connection-level errors of whichever HTTP client huggingface_hub uses (httpx2, httpx, requests)."""
    errors: list[type[BaseException]] = [ConnectionError, TimeoutError]
    for module, name in (
        ("httpx2", "TransportError"),
        ("httpx", "TransportError"),
        ("requests", "ConnectionError"),
    ):
        try:
            errors.append(getattr(importlib.import_module(module), name))
        except (ImportError, AttributeError):
            pass
    return tuple(errors)


def _local_token() -> str | None:
    """The token a push would use, read without any request (`get_token()` may exchange an OIDC token):
    --to-dir redacts it from the card like a push does, and stays offline."""
    token = os.environ.get("HF_TOKEN") or os.environ.get("HUGGING_FACE_HUB_TOKEN")
    if not token:
        try:
            token = Path(constants.HF_TOKEN_PATH).read_text(encoding="utf-8")
        except OSError:
            return None
    return token.strip() or None


def _redact(card: DatasetCard, token: str | None) -> DatasetCard:
    """The card with the token blanked, should a config value ever hold it (the card quotes the config)."""
    text = str(card)
    if not token or token not in text:
        return card
    log.warning("the run's config contains the Hub token; it is redacted from the dataset card")
    return DatasetCard(text.replace(token, REDACTED))


# ---- to a folder ----------------------------------------------------------------------------------------


def write_dir(target: Path, release: Release) -> PushResult:
    """Write the Hub layout for this round into `target`, keeping rounds an earlier --to-dir wrote there."""
    previous = _previous_export(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    for stale in target.parent.glob(f".{target.name}.*.partial"):  # left by a killed earlier write
        log.info("removing %s, left by an interrupted --to-dir write", stale)
        shutil.rmtree(stale, ignore_errors=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent))
    try:
        staging.chmod(0o755)
        existing: dict[str, int] = {}
        if previous is not None:
            shutil.copytree(target, staging, dirs_exist_ok=True)
            existing = {str(f.relative_to(target)): f.stat().st_size for f in target.rglob("*.parquet")}
        stage_round(staging, release, previous, existing, token=_local_token())
        faults.point("push:swap")
        _swap_in(staging, target)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    log.info("wrote round %d to %s", release.round, target)
    return PushResult(release.round, str(target), str(target.resolve()), release.rows)


def _write_split(folder: Path, split: str, ds: datasets.Dataset) -> list[str]:
    """`<config>/<split>-00000-of-0000N.parquet`, sharded as `push_to_hub` would, old shards of `split` gone;
    returns the file names written."""
    folder.mkdir(exist_ok=True)
    for old in folder.glob(f"{split}-*.parquet"):
        old.unlink()
    shards = int(ds.data.nbytes / MAX_SHARD_BYTES) + 1
    names = [f"{split}-{i:05d}-of-{shards:05d}.parquet" for i in range(shards)]
    for i, name in enumerate(names):
        ds.shard(num_shards=shards, index=i, contiguous=True).to_parquet(str(folder / name))
    return names


def _previous_export(target: Path) -> DatasetCard | None:
    """The card of an earlier --to-dir export in `target`, None if `target` is new or empty."""
    if not target.exists():
        return None
    if not target.is_dir():
        raise ConfigError(
            f"--to-dir '{target}' is a file; expected a new or empty folder, or an earlier export"
        )
    if not any(target.iterdir()):
        return None
    readme = target / "README.md"
    card = DatasetCard.load(readme, repo_type="dataset") if readme.is_file() else None
    if card is None or not set(splits_from_metadata(card.data)) & set(CONFIGS):
        raise ConfigError(
            f"--to-dir '{target}' is not empty and holds no dataset written by data.push; expected a new or "
            "empty folder, or an earlier --to-dir export to add this round to"
        )
    return card


def _swap_in(staging: Path, target: Path) -> None:
    """Replace `target` by `staging` with two renames: the folder is never half old, half new.

    Between the renames `target` is briefly absent; were the process killed exactly there, the old export
    is in the `.<name>.<hex>.old` folder next to it.
    """
    if not target.exists():
        staging.rename(target)
        return
    backup = target.with_name(f".{target.name}.{uuid.uuid4().hex[:8]}.old")
    target.rename(backup)
    try:
        staging.rename(target)
    except BaseException:
        backup.rename(target)
        raise
    shutil.rmtree(backup, ignore_errors=True)


def _first_line(e: BaseException) -> str:
    text = str(e).strip()
    return text.splitlines()[0] if text else type(e).__name__


def plan(cfg: SparringConfig, round_: int, repo: str | None, to_dir: str | None) -> str:
    """`--dry-run`: what a push would publish, read from the store (read-only); nothing is sent or written."""
    repo = target_repo(cfg, repo, to_dir)
    exported, _ = read_round(cfg, round_)
    target = f"the folder {to_dir}" if to_dir else f"the Hub dataset {repo} (one commit)"
    rows = ", ".join(f"{config} {len(ds)} rows" for config, ds in exported.items())
    return (
        f"dry run: would publish round {round_} ({split_name(round_)}) of {cfg.run.dir} to {target}: {rows}"
    )


# ---- command line ---------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> None:
    from core.cli import base_parser, config_from_args, main_guard, setup_logging

    parser = base_parser(__doc__.splitlines()[0])
    parser.add_argument(
        "--repo", default=None, metavar="ORG/NAME", help="Hub dataset repo (default: hub.repo)"
    )
    parser.add_argument(
        "--private", action="store_true", default=None, help="create the repo private (default: hub.private)"
    )
    parser.add_argument("--commit-message", default=None, metavar="M", help="summary of the Hub commits")
    parser.add_argument(
        "--to-dir", default=None, metavar="PATH", help="write the Hub layout to a local folder; no network"
    )
    args = parser.parse_args(argv)
    setup_logging(args.verbose)
    # the HTTP stack's own debug lines (one per socket event) drown the push's; -v is about Sparring
    for noisy in ("httpx2", "httpcore", "httpcore2", "fsspec"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    def go() -> None:
        cfg = config_from_args(args)
        if args.round is None:
            raise ConfigError("--round is required; expected the round to publish, e.g. --round 1")
        if args.dry_run:
            print(plan(cfg, args.round, args.repo, args.to_dir))
            return
        result = push_round(
            cfg,
            args.round,
            args.repo,
            private=args.private,
            commit_message=args.commit_message,
            to_dir=args.to_dir,
        )
        print(result.summary())

    main_guard(go)


if __name__ == "__main__":
    main()
