"""Fill a run store by hand (prompts, responses, scores) for tests that need no vLLM."""

from __future__ import annotations

from data.records import PromptRecord, ResponseRecord, ScoreRecord, to_arrow
from data.store import Store


def fill_round(
    store: Store,
    round_: int,
    rewards: dict[str, list[float]],
    scorer: str = "rm",
    texts: dict[str, list[str]] | None = None,
    prompt_texts: dict[str, str] | None = None,
) -> None:
    """One prompt per key of `rewards`, one response per reward value; stages attack/respond/score logged."""
    prompts = [
        PromptRecord(
            pid,
            round_,
            i,
            (prompt_texts or {}).get(pid, f"prompt {pid}"),
            "cat",
            None,
            "gpo",
            f"write like {pid}",
        )
        for i, pid in enumerate(rewards)
    ]
    responses, scores = [], []
    for pid, values in rewards.items():
        for j, value in enumerate(values):
            rid = f"{pid}-{j}"
            text = texts[pid][j] if texts else f"answer {j} to {pid}"
            responses.append(ResponseRecord(rid, pid, round_, j, text, "stop", 5, 5, "defender"))
            scores.append(ScoreRecord(rid, scorer, round_, value))
    with store.stage(round_, "attack"):
        store.insert("prompts", to_arrow(prompts, PromptRecord))
    with store.stage(round_, "respond"):
        store.insert("responses", to_arrow(responses, ResponseRecord))
    with store.stage(round_, "score"):
        store.insert("scores", to_arrow(scores, ScoreRecord))
