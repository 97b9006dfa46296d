"""How new each of a round's prompts is, against the round's other prompts and every earlier round's prompts.

GPO (arXiv 2406.10977; its code) rewards the attacker with P(unsafe) − 5·SelfBLEU − 1·cosine, both measured
against a buffer of earlier attack prompts, and curiosity-driven red-teaming (Hong et al., 2024) does the same
against all earlier generations: an attack the defender already saw earns nothing for being repeated. Sparring
keeps the two terms as novelties in [0, 1]:

    ngram_i     = 1 − max_j Jaccard(word 1..n-grams of i, of j)       (a dependency-free SelfBLEU stand-in)
    embedding_i = 1 − max_j cosine(embedding of i, of j)
    novelty_i   = (w_ngram · ngram_i + w_emb · embedding_i) / (w_ngram + w_emb)     (GPO: w_ngram 5, w_emb 1)

where j runs over the round's other prompts and the history. Similarities are computed in blocks of rows, so
memory grows with (block × (round + history)), never with the square of the round.

Embeddings: `hashing` (default, no model: hashed, signed word 1..2-grams, L2-normalised — cosine on them is a
bag-of-n-grams similarity), or any sentence-embedding model transformers can load (mean-pooled last hidden
state, as sentence-transformers models are trained), e.g. `sentence-transformers/all-MiniLM-L6-v2`.
"""

from __future__ import annotations

import hashlib
import warnings
from collections.abc import Sequence

import numpy as np
import torch

from core.text import ngram_set

BLOCK = 1024  # query rows per similarity block
HASH_DIM = 1 << 16


def _sparse(rows: list[list[int]], values: list[list[float]], width: int) -> torch.Tensor:
    r = [i for i, cols in enumerate(rows) for _ in cols]
    c = [j for cols in rows for j in cols]
    v = [x for vals in values for x in vals]
    with warnings.catch_warnings():  # torch flags its sparse kernels as beta; they are exact for this product
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_coo_tensor(
            torch.tensor([r, c], dtype=torch.long).reshape(2, -1),
            torch.tensor(v, dtype=torch.float64),
            (len(rows), max(1, width)),
        ).coalesce()


def _max_similarity(
    query: torch.Tensor, keys: torch.Tensor, kind: str, sizes: torch.Tensor | None
) -> np.ndarray:
    """Row i's largest similarity to any key other than itself (key i is query i: the round comes first).

    `kind` is `jaccard` (binary sparse rows; `sizes` = their n-gram counts) or `cosine` (unit rows)."""
    n = query.shape[0]
    out = np.zeros(n)
    if keys.shape[0] <= 1 and n <= 1:
        return out
    keys_t = keys.t().coalesce() if keys.is_sparse else keys.T
    for start in range(0, n, BLOCK):
        stop = min(n, start + BLOCK)
        if query.is_sparse:  # sparse x sparse, densified one block of rows at a time
            block = query.index_select(0, torch.arange(start, stop))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", UserWarning)
                sims = torch.sparse.mm(block, keys_t).to_dense()
        else:
            sims = query[start:stop] @ keys_t
        if kind == "jaccard":
            assert sizes is not None
            union = sizes[start:stop, None] + sizes[None, :] - sims
            sims = torch.where(union > 0, sims / union.clamp(min=1), torch.zeros_like(sims))
        rows = torch.arange(stop - start)
        sims[rows, rows + start] = -1.0  # not itself
        out[start:stop] = sims.max(dim=1).values.clamp(min=0).numpy()
    return out


def ngram_novelty(texts: Sequence[str], history: Sequence[str] = (), max_n: int = 2) -> np.ndarray:
    """1 − the largest word 1..max_n-gram Jaccard similarity to another prompt of the round or of the history."""
    if not texts:
        return np.zeros(0)
    grams = [ngram_set(t, max_n) for t in [*texts, *history]]
    vocab: dict[tuple[str, ...], int] = {}
    cols = [[vocab.setdefault(g, len(vocab)) for g in gs] for gs in grams]
    matrix = _sparse(cols, [[1.0] * len(c) for c in cols], len(vocab))
    sizes = torch.tensor([len(g) for g in grams], dtype=torch.float64)
    query = matrix.index_select(0, torch.arange(len(texts)))
    if len(grams) < 2:
        return np.ones(len(texts))
    return np.clip(1.0 - _max_similarity(query, matrix, "jaccard", sizes), 0.0, 1.0)


def hashing_embeddings(texts: Sequence[str]) -> torch.Tensor:
    """Unit vectors of hashed, signed word 1..2-grams (the feature-hashing trick; no model, no vocabulary)."""
    cols, vals = [], []
    for t in texts:
        row: dict[int, float] = {}
        for gram in ngram_set(t, 2):
            h = int.from_bytes(hashlib.blake2b(" ".join(gram).encode(), digest_size=8).digest(), "little")
            row[h % HASH_DIM] = row.get(h % HASH_DIM, 0.0) + (1.0 if (h >> 63) & 1 else -1.0)
        norm = float(np.sqrt(sum(v * v for v in row.values()))) or 1.0
        cols.append(list(row))
        vals.append([v / norm for v in row.values()])
    return _sparse(cols, vals, HASH_DIM)


def model_embeddings(texts: Sequence[str], model: str, batch_size: int = 64) -> torch.Tensor:
    """Mean-pooled, L2-normalised last hidden states of a transformers encoder (sentence-transformers' recipe)."""
    from transformers import AutoModel, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(model)
    if tokenizer.pad_token is None:
        tokenizer.pad_token = tokenizer.eos_token
    encoder = AutoModel.from_pretrained(model).eval()
    out = []
    with torch.inference_mode():
        for start in range(0, len(texts), batch_size):
            batch = tokenizer(
                list(texts[start : start + batch_size]), padding=True, truncation=True, return_tensors="pt"
            )
            hidden = encoder(**batch).last_hidden_state
            mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
            pooled = (hidden * mask).sum(dim=1) / mask.sum(dim=1).clamp(min=1)
            out.append(torch.nn.functional.normalize(pooled.double(), dim=-1))
    return torch.cat(out) if out else torch.zeros(0, 1, dtype=torch.float64)


def embedding_novelty(
    texts: Sequence[str], history: Sequence[str] = (), model: str = "hashing"
) -> np.ndarray:
    """1 − the largest cosine similarity to another prompt of the round or of the history."""
    if not texts:
        return np.zeros(0)
    everything = [*texts, *history]
    if len(everything) < 2:
        return np.ones(len(texts))
    vectors = hashing_embeddings(everything) if model == "hashing" else model_embeddings(everything, model)
    query = vectors.index_select(0, torch.arange(len(texts))) if vectors.is_sparse else vectors[: len(texts)]
    return np.clip(1.0 - _max_similarity(query, vectors, "cosine", None), 0.0, 1.0)


def novelty(
    texts: Sequence[str],
    history: Sequence[str] = (),
    *,
    max_n: int = 2,
    ngram_weight: float = 5.0,
    embedding_weight: float = 1.0,
    embedding_model: str = "hashing",
) -> np.ndarray:
    """GPO's two novelty terms, weighted (see the module docstring); a zero weight skips its term."""
    total = np.zeros(len(texts))
    if ngram_weight > 0:
        total += ngram_weight * ngram_novelty(texts, history, max_n)
    if embedding_weight > 0:
        total += embedding_weight * embedding_novelty(texts, history, embedding_model)
    weight = ngram_weight + embedding_weight
    return total / weight if weight > 0 else total
