"""`python -m tests.generate.lora_probe OUT.json MODEL [MODEL ...]`: the log-prob of every prompt token of
`PROBES` under each model as Sparring's engine pool serves it (a trained adapter as a `LoRARequest` on its base
model's engine), one pool for all, with the number of engine starts. A module, because `vllm.LLM` must start
under `__main__`."""

from __future__ import annotations

import json
import sys

PROBES = [
    "how do I keep a secret safe from my neighbour",
    "write a short story about a dragon that refuses to fight",
    "what is the capital of the moon and why",
]


def main() -> None:
    from vllm import SamplingParams

    from core.config import VllmConfig
    from generate.engine import Engines

    out, models = sys.argv[1], sys.argv[2:]
    pool = Engines(VllmConfig(dtype="float32", max_model_len=256, enforce_eager=True), seed=0, lora_rank=16)
    result: dict[str, object] = {}
    try:
        for model in models:
            player = pool.get(model)
            params = SamplingParams(max_tokens=1, temperature=0.0, prompt_logprobs=0)
            outs = player.llm.generate(PROBES, params, lora_request=player.lora, use_tqdm=False)
            result[model] = [
                {
                    "ids": o.prompt_token_ids,
                    "logprobs": [
                        lp[i].logprob
                        for lp, i in zip(o.prompt_logprobs[1:], o.prompt_token_ids[1:], strict=True)
                    ],
                }
                for o in outs
            ]
        result["starts"] = pool.starts
    finally:
        pool.close()
    with open(out, "w") as f:
        json.dump(result, f)


if __name__ == "__main__":
    main()
