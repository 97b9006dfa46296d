"""`python -m data.push` against a Hub-compatible server on 127.0.0.1 (tests/data/hub_server.py): the real
`datasets` / `huggingface_hub` clients run in a subprocess pointed there with HF_ENDPOINT, the way a user runs
the command; the test checks what arrived (files, configs, splits, card), loads it back with
`load_dataset`, and checks that the token is never in the output, the card or the store, and that failures
are one line and leave nothing behind.
"""

from __future__ import annotations

import json
import os
import secrets
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from huggingface_hub import DatasetCard

from data.card import configs_metadata
from data.export import CONFIGS, DEFENDER_DPO, FEATURES, export_round
from data.store import Store
from tests.conftest import REPO, TINY_DIR
from tests.data.hub_server import FakeHub
from tests.data.test_export import build_run

TOKEN = "hf_sparringTest" + secrets.token_hex(16)  # unique, so a leak anywhere is unambiguous
REPO_ID = "sparring-org/round-data"


@pytest.fixture
def hub():
    with FakeHub(TOKEN) as hub:
        yield hub


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    build_run(tmp_path / "run")
    return tmp_path / "run"


def run_py(
    tmp_path: Path, args: list[str], env: dict[str, str], stdin: str | None = None
) -> subprocess.CompletedProcess:
    """A fresh interpreter in an empty working dir, with no Hugging Face settings but those given."""
    work = tmp_path / "work"
    work.mkdir(exist_ok=True)
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("HF_", "HUGGING"))}
    clean.update(
        {
            "PYTHONPATH": str(REPO),
            "PYTHONUNBUFFERED": "1",
            "HF_HOME": str(tmp_path / "hf-home"),  # no stored login: only HF_TOKEN can supply a token
            "HF_HUB_DISABLE_PROGRESS_BARS": "1",
            **env,
        }
    )
    return subprocess.run(
        [sys.executable, *args], cwd=work, env=clean, input=stdin, capture_output=True, text=True, timeout=300
    )


def push(tmp_path: Path, run_dir: Path, env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    cli = ["-m", "data.push", "--config", str(REPO / "configs" / "demo.yaml"), "-v"]
    cli += ["--set", f"run.dir={run_dir}", "--set", f"run.tiny_models_dir={TINY_DIR}", *args]
    return run_py(tmp_path, cli, env)


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in root.rglob("*")}


def assert_token_nowhere(tmp_path: Path, *outputs: str) -> None:
    for out in outputs:
        assert TOKEN not in out
    for path in tmp_path.rglob("*"):  # the store, the card, caches: every byte written under the test dir
        if path.is_file():
            assert TOKEN.encode() not in path.read_bytes(), path


def test_push_rounds_to_a_hub_and_load_them_back(hub: FakeHub, run_dir: Path, tmp_path: Path) -> None:
    env = {**hub.client_env(), "HF_TOKEN": TOKEN}
    first = push(
        tmp_path, run_dir, env, "--round", "1", "--repo", REPO_ID, "--private", "--commit-message", "r1"
    )
    assert first.returncode == 0, first.stderr
    assert (
        first.stdout.strip()
        .splitlines()[-1]
        .startswith(f"published round 1 (round_1) to {hub.url}/datasets/")
    )
    second = push(tmp_path, run_dir, env, "--round", "2", "--repo", REPO_ID)
    assert second.returncode == 0, second.stderr
    assert not hub.unhandled

    repo = hub.repo(REPO_ID)
    assert repo.private
    assert sorted(repo.files) == ["README.md"] + [
        f"{config}/round_{r}-00000-of-00001.parquet" for config in sorted(CONFIGS) for r in (1, 2)
    ]
    messages = [c.message for c in repo.commits[1:]]
    assert messages == ["r1", "Sparring round 2"]  # one commit per push: 3 configs + the card, all or nothing

    card = DatasetCard(repo.files["README.md"].decode())
    assert card.data.configs == configs_metadata({c: ["round_1", "round_2"] for c in CONFIGS})
    infos = {i["config_name"]: i for i in card.data.dataset_info}
    assert set(infos) == set(CONFIGS)
    assert [s["name"] for s in infos[DEFENDER_DPO]["splits"]] == ["round_1", "round_2"]
    assert card.data.license == "apache-2.0"
    assert f'load_dataset("{REPO_ID}", "defender_dpo", split="round_1")' in card.text
    assert "| 2 | `runs/x/models/attacker-0-r2`" in card.text  # both rounds described

    # the same layout as --to-dir, so a local export and the Hub copy load the same way
    local = push(
        tmp_path, run_dir, {}, "--round", "1", "--repo", REPO_ID, "--to-dir", str(tmp_path / "local")
    )
    assert local.returncode == 0, local.stderr
    push(tmp_path, run_dir, {}, "--round", "2", "--repo", REPO_ID, "--to-dir", str(tmp_path / "local"))
    local_files = [p for p in (tmp_path / "local").rglob("*") if p.is_file()]
    assert sorted(str(p.relative_to(tmp_path / "local")) for p in local_files) == sorted(repo.files)
    local_card = DatasetCard.load(tmp_path / "local" / "README.md", repo_type="dataset")
    assert local_card.data.configs == card.data.configs
    assert local_card.text.split("## Config\n")[0] == card.text.split("## Config\n")[0]

    # what arrived loads back through the Hub client into the rows the store holds
    loader = textwrap.dedent(f"""
        import json, datasets
        out = {{}}
        for config in {list(CONFIGS)!r}:
            for r in (1, 2):
                ds = datasets.load_dataset({REPO_ID!r}, config, split=f"round_{{r}}")
                out[f"{{config}}/{{r}}"] = {{"rows": ds.to_list(), "features": ds.features.to_dict()}}
        print(json.dumps(out))
    """)
    loaded = run_py(tmp_path, ["-c", loader], env)
    assert loaded.returncode == 0, loaded.stderr
    got = json.loads(loaded.stdout.strip().splitlines()[-1])
    with Store.for_run(run_dir, read_only=True) as store:
        for r in (1, 2):
            for config, ds in export_round(store, r).items():
                assert got[f"{config}/{r}"]["rows"] == ds.to_list(), (config, r)
                assert got[f"{config}/{r}"]["features"] == FEATURES[config].to_dict()

    assert_token_nowhere(tmp_path, first.stdout, first.stderr, second.stdout, second.stderr, card.content)
    for commit in repo.commits:  # nor in anything uploaded, at any revision
        for path, f in commit.files.items():
            assert TOKEN.encode() not in f.data, (commit.message, path)


def test_push_takes_the_token_from_hf_auth_login(
    hub: FakeHub, run_dir: Path, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    """No HF_TOKEN: the token `huggingface_hub.login` stored (HF_TOKEN_PATH) is used, and not leaked."""
    token_file = tmp_path_factory.mktemp("login") / "token"  # outside tmp_path, which is scanned for it
    env = {**hub.client_env(), "HF_TOKEN_PATH": str(token_file)}
    login = run_py(
        tmp_path,
        ["-c", "import sys, huggingface_hub; huggingface_hub.login(token=sys.stdin.readline().strip())"],
        env,
        stdin=TOKEN + "\n",
    )
    assert login.returncode == 0, login.stderr
    assert token_file.read_text().strip() == TOKEN
    result = push(tmp_path, run_dir, env, "--round", "1", "--repo", REPO_ID)
    assert result.returncode == 0, result.stderr
    assert sorted(hub.repo(REPO_ID).files)[0] == "README.md"
    assert not hub.repo(REPO_ID).private  # created public: neither --private nor hub.private
    assert_token_nowhere(tmp_path, result.stdout, result.stderr, login.stdout, login.stderr)


def _closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    "case, args, env, expected",
    [
        ("missing token", [], {}, "no Hugging Face token found; set HF_TOKEN"),
        (
            "bad repo id",
            ["--repo", "org/bad name"],
            {"HF_TOKEN": TOKEN},
            "--repo 'org/bad name' is not a valid",
        ),
        ("no namespace", ["--repo", "just-a-name"], {"HF_TOKEN": TOKEN}, "has no organisation or user"),
        ("wrong token", [], {"HF_TOKEN": "hf_wrong" + TOKEN[8:]}, "rejected the token"),
        (
            "unreachable",
            [],
            {"HF_TOKEN": TOKEN, "HF_ENDPOINT": "closed"},
            "cannot reach the Hub at http://127.0.0.1:",
        ),
        ("incomplete round", ["--round", "3"], {"HF_TOKEN": TOKEN}, "round 3 has not been played"),
    ],
)
def test_push_failures_are_one_line_and_leave_nothing(
    hub: FakeHub,
    run_dir: Path,
    tmp_path: Path,
    case: str,
    args: list[str],
    env: dict[str, str],
    expected: str,
) -> None:
    env = {**hub.client_env(), **env}
    if env.get("HF_ENDPOINT") == "closed":
        env["HF_ENDPOINT"] = f"http://127.0.0.1:{_closed_port()}"
    args = (
        [*args]
        + ([] if "--round" in args else ["--round", "1"])
        + ([] if "--repo" in args else ["--repo", REPO_ID])
    )
    (tmp_path / "work").mkdir()
    before = snapshot(tmp_path)
    result = push(tmp_path, run_dir, env, *args)
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("sparring: error: ") and expected in lines[-1], result.stderr
    assert "Traceback" not in result.stderr
    assert not hub.repos  # nothing created on the Hub
    after = snapshot(tmp_path)
    new = sorted(p for p in set(after) - set(before) if not p.startswith("hf-home"))
    assert new == [], new  # nothing written next to the command (the run store included)
    assert {p: after[p] for p in before} == before
    assert_token_nowhere(tmp_path, result.stdout, result.stderr)
