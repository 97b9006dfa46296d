"""How new each of a round's prompts is, against the round's other prompts and every earlier round's prompts.

GPO (arXiv 2406.10977; its code) rewards the attacker with P(unsafe) − 5·SelfBLEU − 1·cosine, both measured
against a buffer of earlier attack prompts, and curiosity-driven red-teaming (Hong et al., 2024) does the same
against all earlier generations: an attack the defender already saw earns nothing for being repeated. Sparring
keeps the two terms as novelties in [0, 1]:

    ngram_i     = 1 − max_j Jaccard(word 1..n-grams of i, of j)       (a dependency-free SelfBLEU stand-in)
    embedding_i = 1 − max_j cosine(embedding of i, of j)
    novelty_i   = (w_ngram · ngram_i + w_emb · embedding_i) / (w_ngram + w_emb)     (GPO: w_ngram 5, w_emb 1)

where j runs over the round's other prompts and the history. Embeddings: `hashing` (default, no model): the
bag of word 1..2-grams, whose cosine is |A∩B| / √(|A|·|B|), computed exactly from the gram sets; or any
sentence-embedding model transformers can load (mean-pooled last hidden state, as sentence-transformers models
are trained), e.g. `sentence-transformers/all-MiniLM-L6-v2`.

**Finding the closest prompt, at any scale.** The maxima are over round × (round + history) pairs. Up to
`EXACT_MAX_PAIRS` pairs they are computed exactly, in blocks of rows (memory grows with block × all, never with
the square). Beyond, each prompt gets candidates from two searches whose work per prompt is constant, so the
whole is linear in round + history (bench/scale.py):
- faiss (an inverted-file index over a 128-dimensional sketch: the signed, feature-hashed bag of n-grams,
  whose inner product approximates the n-gram cosine; the model's own vectors for a model embedding; lists of
  ~`IVF_LIST_SIZE`, `NPROBE` searched): the `CANDIDATES` nearest;
- MinHash orderings (`minhash_neighbours`, an LSH forest flattened to sorts): text vectors are nearly
  orthogonal, so an inverted file clusters weakly and can put a near copy in another list than its original;
  texts that share their first min-hashes sort together, which near copies do.
The `EXACT_PER_PROMPT` best candidates by MinHash estimate are then measured exactly, and the maxima taken over
them (never above the true maximum). Exact copies (same normalised text) are found by hashing, never by search:
a repeated prompt always has novelty 0. Against the exact computation (tests/train/test_novelty.py, 1,000
prompts + 3,000 of history): the reward's novelty has Spearman ≥ 0.9 and mean absolute error ≤ 0.03, ≥ 99% of
near copies (Jaccard ≥ 0.5) are found (99.9% measured on 20,000 + 60,000); what is missed are far neighbours,
whose similarity is low either way. MinHash/LSH alone (e.g. datasketch) finds pairs above a threshold only,
and leaves a prompt with no near neighbour — most prompts of a diverse round — without an estimate.
"""

from __future__ import annotations

import warnings
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch

from core.text import GramSets, gram_sets, mix64, normalise

BLOCK = 1024  # query rows per exact similarity block
EXACT_MAX_PAIRS = 20_000_000  # round × (round + history) pairs up to which the maxima are computed exactly
SKETCH_DIM = 128
CANDIDATES = 8  # nearest neighbours by sketch per prompt whose exact similarity is computed
IVF_MIN_ROWS = 50_000  # below: a brute-force scan of the sketches (still never a square matrix)
IVF_LIST_SIZE = 1_000
NPROBE = 4
TREES, PREFIX = 16, 3  # MinHash orderings, and the min-hashes each one sorts by
EXACT_PER_PROMPT = 10  # candidates per prompt and measure whose exact similarity is computed


# ---------------------------------------------------------------------------------------------------------
# Exact: blockwise over every pair


def _binary_matrix(grams: GramSets) -> torch.Tensor:
    """Texts × distinct grams, 1 where the text has the gram (sparse)."""
    _, columns = np.unique(grams.keys, return_inverse=True)
    rows = np.repeat(np.arange(len(grams)), grams.sizes)
    with warnings.catch_warnings():  # torch flags its sparse kernels as beta; they are exact here
        warnings.simplefilter("ignore", UserWarning)
        return torch.sparse_coo_tensor(
            torch.from_numpy(np.stack([rows, columns]).astype(np.int64)),
            torch.ones(len(columns), dtype=torch.float64),
            (len(grams), max(1, int(columns.max()) + 1 if len(columns) else 1)),
        ).coalesce()


def _exact_gram_maxima(grams: GramSets, n_query: int) -> tuple[np.ndarray, np.ndarray]:
    """Each query row's largest Jaccard and largest n-gram cosine to any other row (the queries come first)."""
    matrix = _binary_matrix(grams)
    keys_t = matrix.t().coalesce()
    sizes = torch.from_numpy(grams.sizes.astype(np.float64))
    jaccard, cosine = np.zeros(n_query), np.zeros(n_query)
    for start in range(0, n_query, BLOCK):
        stop = min(n_query, start + BLOCK)
        block = matrix.index_select(0, torch.arange(start, stop))
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)
            inter = torch.sparse.mm(block, keys_t).to_dense()
        union = sizes[start:stop, None] + sizes[None, :] - inter
        jac = torch.where(union > 0, inter / union.clamp(min=1), torch.zeros_like(inter))
        norm = (sizes[start:stop, None] * sizes[None, :]).sqrt()
        cos = torch.where(norm > 0, inter / norm.clamp(min=1e-12), torch.zeros_like(inter))
        rows = torch.arange(stop - start)
        jac[rows, rows + start] = -1.0  # not itself
        cos[rows, rows + start] = -1.0
        jaccard[start:stop] = jac.max(dim=1).values.clamp(min=0).numpy()
        cosine[start:stop] = cos.max(dim=1).values.clamp(min=0).numpy()
    return jaccard, cosine


def _exact_dense_maxima(vectors: np.ndarray, n_query: int) -> np.ndarray:
    """Each query row's largest cosine to any other row (unit vectors)."""
    out = np.zeros(n_query)
    for start in range(0, n_query, BLOCK):
        stop = min(n_query, start + BLOCK)
        sims = vectors[start:stop] @ vectors.T
        sims[np.arange(stop - start), np.arange(start, stop)] = -1.0
        out[start:stop] = sims.max(axis=1).clip(min=0)
    return out


# ---------------------------------------------------------------------------------------------------------
# Approximate search, exact maxima over the candidates it finds


def sketches(grams: GramSets, dim: int = SKETCH_DIM) -> np.ndarray:
    """Unit rows: each gram adds ±1 at a hashed coordinate (the feature-hashing trick), so inner products
    approximate the n-gram cosine. Used only to find candidates."""
    hashed = mix64(grams.keys)
    column = (hashed % np.uint64(dim)).astype(np.int64)
    sign = np.where((hashed >> np.uint64(63)) & np.uint64(1), 1.0, -1.0)
    rows = np.repeat(np.arange(len(grams)), grams.sizes)
    flat = np.bincount(rows * dim + column, weights=sign, minlength=len(grams) * dim)
    vectors = flat.reshape(len(grams), dim).astype(np.float32)
    vectors /= np.maximum(np.linalg.norm(vectors, axis=1, keepdims=True), 1e-12)
    return vectors


def candidates(vectors: np.ndarray, n_query: int, k: int = CANDIDATES) -> tuple[np.ndarray, np.ndarray]:
    """(query, neighbour) index pairs: each query row's ≤ k approximate nearest rows by inner product, itself
    left out. An inverted-file index from `IVF_MIN_ROWS` rows (lists of ~`IVF_LIST_SIZE`, `NPROBE` searched),
    a flat scan below."""
    import faiss

    vectors = np.ascontiguousarray(vectors, dtype=np.float32)
    n, dim = vectors.shape
    index: Any
    if n < IVF_MIN_ROWS:
        index = faiss.IndexFlatIP(dim)
    else:
        lists = max(1, n // IVF_LIST_SIZE)
        index = faiss.IndexIVFFlat(faiss.IndexFlatIP(dim), dim, lists, faiss.METRIC_INNER_PRODUCT)
        sample = np.random.default_rng(0).choice(n, min(n, 40 * lists), replace=False)
        index.train(vectors[np.sort(sample)])
        index.nprobe = NPROBE
    index.add(vectors)
    _, found = index.search(vectors[:n_query], min(n, k + 1))
    query = np.repeat(np.arange(n_query), found.shape[1])
    found = found.reshape(-1)
    keep = (found >= 0) & (found != query)
    return query[keep], found[keep]


def minhashes(grams: GramSets, count: int) -> np.ndarray:
    """`count` × texts MinHash values (Broder, 1997): P(two texts share a value) = their Jaccard similarity.
    The gram keys are already well-mixed 64-bit hashes, so each min-wise hash is a multiply-add mod 2⁶⁴ with
    its own odd multiplier (Dietzfelbinger's multiply-shift family), one pass over the keys per hash."""
    rng = np.random.default_rng(12345)
    multipliers = rng.integers(1, 2**63, size=count, dtype=np.uint64) * np.uint64(2) + np.uint64(1)
    offsets = rng.integers(0, 2**63, size=count, dtype=np.uint64)
    out = np.full((count, len(grams)), np.iinfo(np.uint64).max, np.uint64)
    nonempty = grams.sizes > 0
    starts = grams.indptr[:-1][nonempty]
    if len(grams.keys):
        for k in range(count):
            out[k, nonempty] = np.minimum.reduceat(grams.keys * multipliers[k] + offsets[k], starts)
    return out


def minhash_neighbours(grams: GramSets, n_query: int, values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(query, neighbour) pairs adjacent in one of `TREES` orderings of the texts by `PREFIX` min-hashes
    (an LSH forest, Bawa et al., 2005, flattened to sorts): texts that share their first min-hashes sort
    together, so a near copy lands beside its original in some ordering with high probability, even where
    the sketch index clustered the two apart."""
    query, found = [], []
    for tree in range(TREES):
        order = np.lexsort(tuple(values[tree * PREFIX + p] for p in reversed(range(PREFIX))))
        for a, b in ((order[:-1], order[1:]), (order[1:], order[:-1])):
            keep = a < n_query
            query.append(a[keep])
            found.append(b[keep])
    return np.concatenate(query), np.concatenate(found)


def _best_estimates(
    query: np.ndarray, found: np.ndarray, values: np.ndarray, sizes: np.ndarray, keep: int
) -> np.ndarray:
    """A mask of the candidate pairs worth an exact computation: per query, the `keep` with the highest
    MinHash estimate of the Jaccard similarity and the `keep` with the highest estimate of the n-gram
    cosine (|A∩B| = J·(|A|+|B|)/(1+J)). Exact sets are the slow part; the estimate is one comparison per
    min-hash."""
    estimate = np.zeros(len(query))
    for start in range(0, len(query), 1 << 20):
        q, f = query[start : start + (1 << 20)], found[start : start + (1 << 20)]
        estimate[start : start + len(q)] = (values[:, q] == values[:, f]).mean(axis=0)
    size_q, size_f = sizes[query].astype(np.float64), sizes[found].astype(np.float64)
    cosine = estimate * (size_q + size_f) / (1 + estimate) / np.sqrt(np.maximum(size_q * size_f, 1))
    mask = np.zeros(len(query), dtype=bool)
    for score in (estimate, cosine):
        order = np.lexsort((-score, query))
        grouped = query[order]
        first = np.searchsorted(grouped, grouped, side="left")
        mask[order[np.arange(len(order)) - first < keep]] = True
    return mask


def _all_candidates(grams: GramSets, n_query: int) -> tuple[np.ndarray, np.ndarray]:
    """The sketch index's nearest neighbours and the MinHash neighbours, each pair once, narrowed to the
    `EXACT_PER_PROMPT` best by MinHash estimate."""
    values = minhashes(grams, TREES * PREFIX)
    q1, f1 = candidates(sketches(grams), n_query)
    q2, f2 = minhash_neighbours(grams, n_query, values)
    pair = np.unique(np.concatenate([q1, q2]).astype(np.int64) * len(grams) + np.concatenate([f1, f2]))
    query, found = pair // len(grams), pair % len(grams)
    keep = query != found
    query, found = query[keep], found[keep]
    best = _best_estimates(query, found, values, grams.sizes, EXACT_PER_PROMPT)
    return query[best], found[best]


def _max_per_query(query: np.ndarray, values: np.ndarray, n_query: int) -> np.ndarray:
    out = np.zeros(n_query)
    np.maximum.at(out, query, values)
    return out


def _approx_gram_maxima(grams: GramSets, n_query: int) -> tuple[np.ndarray, np.ndarray]:
    query, found = _all_candidates(grams, n_query)
    inter = grams.intersections(query, found)
    sizes = grams.sizes.astype(np.float64)
    union = sizes[query] + sizes[found] - inter
    norm = np.sqrt(sizes[query] * sizes[found])
    jaccard = np.where(union > 0, inter / np.maximum(union, 1), 0.0)
    cosine = np.where(norm > 0, inter / np.maximum(norm, 1e-12), 0.0)
    return _max_per_query(query, jaccard, n_query), _max_per_query(query, cosine, n_query)


def _approx_dense_maxima(vectors: np.ndarray, n_query: int) -> np.ndarray:
    query, found = candidates(vectors, n_query)
    sims = np.einsum("ij,ij->i", vectors[query].astype(np.float64), vectors[found].astype(np.float64))
    return _max_per_query(query, sims.clip(min=0), n_query)


# ---------------------------------------------------------------------------------------------------------
# The novelties


def _exact(n_query: int, n_all: int, method: str) -> bool:
    if method not in ("auto", "exact", "approximate"):
        raise ValueError(f"method '{method}' is not one of auto, exact, approximate")
    return method == "exact" or (method == "auto" and n_query * n_all <= EXACT_MAX_PAIRS)


def _copies(keys: Sequence[str], n_query: int) -> np.ndarray:
    """True for each of the first `n_query` normalised texts that occurs again among `keys`."""
    counts = Counter(keys)
    return np.array([counts[k] > 1 for k in keys[:n_query]], dtype=bool)


def closest_grams(
    texts: Sequence[str], history: Sequence[str] = (), max_n: int = 2, method: str = "auto"
) -> tuple[np.ndarray, np.ndarray]:
    """Each prompt's largest word 1..max_n-gram Jaccard and largest n-gram cosine to another prompt of the
    round or of the history (1 for exact copies)."""
    keys = [normalise(t) for t in [*texts, *history]]
    grams = gram_sets(keys, max_n, normalised=True)
    if _exact(len(texts), len(keys), method):
        jaccard, cosine = _exact_gram_maxima(grams, len(texts))
    else:
        jaccard, cosine = _approx_gram_maxima(grams, len(texts))
    copies = _copies(keys, len(texts))
    return np.where(copies, 1.0, jaccard), np.where(copies, 1.0, cosine)


def ngram_novelty(
    texts: Sequence[str], history: Sequence[str] = (), max_n: int = 2, method: str = "auto"
) -> np.ndarray:
    """1 − the largest word 1..max_n-gram Jaccard similarity to another prompt of the round or of the history."""
    if not texts:
        return np.zeros(0)
    if len(texts) + len(history) < 2:
        return np.ones(len(texts))
    return np.clip(1.0 - closest_grams(texts, history, max_n, method)[0], 0.0, 1.0)


def model_embeddings(texts: Sequence[str], model: str, batch_size: int = 64) -> np.ndarray:
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
            out.append(torch.nn.functional.normalize(pooled.float(), dim=-1).numpy())
    return np.concatenate(out) if out else np.zeros((0, 1), np.float32)


def embedding_novelty(
    texts: Sequence[str], history: Sequence[str] = (), model: str = "hashing", method: str = "auto"
) -> np.ndarray:
    """1 − the largest cosine similarity to another prompt of the round or of the history."""
    if not texts:
        return np.zeros(0)
    everything = [*texts, *history]
    if len(everything) < 2:
        return np.ones(len(texts))
    if model == "hashing":
        closest = closest_grams(texts, history, 2, method)[1]
    else:
        vectors = model_embeddings(everything, model)
        exact = _exact(len(texts), len(everything), method)
        found = (_exact_dense_maxima if exact else _approx_dense_maxima)(vectors, len(texts))
        closest = np.where(_copies([normalise(t) for t in everything], len(texts)), 1.0, found)
    return np.clip(1.0 - closest, 0.0, 1.0)


def novelty(
    texts: Sequence[str],
    history: Sequence[str] = (),
    *,
    max_n: int = 2,
    ngram_weight: float = 5.0,
    embedding_weight: float = 1.0,
    embedding_model: str = "hashing",
    method: str = "auto",
) -> np.ndarray:
    """GPO's two novelty terms, weighted (see the module docstring); a zero weight skips its term."""
    total = np.zeros(len(texts))
    if not texts:
        return total
    if len(texts) + len(history) < 2:
        return np.ones(len(texts))
    if ngram_weight > 0 and embedding_weight > 0 and embedding_model == "hashing" and max_n == 2:
        jaccard, cosine = closest_grams(texts, history, 2, method)  # one search serves both terms
        total = ngram_weight * (1.0 - jaccard) + embedding_weight * (1.0 - cosine)
    else:
        if ngram_weight > 0:
            total += ngram_weight * ngram_novelty(texts, history, max_n, method)
        if embedding_weight > 0:
            total += embedding_weight * embedding_novelty(texts, history, embedding_model, method)
    weight = ngram_weight + embedding_weight
    return np.clip(total / weight, 0.0, 1.0) if weight > 0 else total
