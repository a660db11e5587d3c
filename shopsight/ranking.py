"""Full-catalogue ranking metrics for next-item recommendation (no sampled negatives).

Every item in the catalogue is scored for every user: one matrix product per batch of users (user vectors
times the item table), then the target's rank is the number of items scoring at least as high as it
(ties count against the model, so a constant scorer earns nothing from them). Padding (index 0) never ranks;
optionally excluded items (what the user already bought) are ranked last.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

PAD = 0
NEVER = np.inf  # rank of a target that cannot be ranked (not in the catalogue)


def exclusion_mask_rows(indptr: np.ndarray, indices: np.ndarray, rows: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(batch row, item) pairs to exclude for the users `rows`, from a CSR (indptr, indices) over users."""
    starts, ends = indptr[rows], indptr[rows + 1]
    lengths = ends - starts
    if lengths.sum() == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.int64)
    batch_rows = np.repeat(np.arange(len(rows)), lengths)
    items = np.concatenate([indices[s:e] for s, e in zip(starts, ends)])
    return batch_rows, items.astype(np.int64)


def ranks_from_scores(scores: np.ndarray, targets: np.ndarray, exclude: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Rank (1 = best) of each row's target among all items of `scores` (b, V); PAD targets get NEVER.

    `exclude` = (batch rows, items) that cannot be recommended (an excluded target gets NEVER). Modifies `scores` in place.
    """
    scores[:, PAD] = -np.inf
    if exclude is not None and len(exclude[0]):
        scores[exclude[0], exclude[1]] = -np.inf
    target_scores = scores[np.arange(len(targets)), targets][:, None]
    ranks = (scores >= target_scores).sum(axis=1).astype(np.float64)
    ranks[(targets == PAD) | np.isneginf(target_scores[:, 0])] = NEVER  # unknown or excluded: never recommended
    return ranks


def rank_targets(
    score_batch: Callable[[np.ndarray], np.ndarray],
    targets: np.ndarray,
    exclude: tuple[np.ndarray, np.ndarray] | None = None,
    batch_size: int = 1024,
) -> np.ndarray:
    """Ranks of the targets, scoring users in batches: `score_batch(rows)` returns the (len(rows), V) scores.

    `exclude` is a CSR (indptr, indices) over users of items to rank last (e.g. already purchased).
    """
    ranks = np.empty(len(targets), dtype=np.float64)
    for start in range(0, len(targets), batch_size):
        rows = np.arange(start, min(start + batch_size, len(targets)))
        scores = np.array(score_batch(rows), dtype=np.float32, copy=True)
        mask = exclusion_mask_rows(*exclude, rows) if exclude is not None else None
        ranks[rows] = ranks_from_scores(scores, targets[rows], mask)
    return ranks


def embedding_scorer(user_vectors: np.ndarray, item_table: np.ndarray) -> Callable[[np.ndarray], np.ndarray]:
    """Scores as one matrix product per batch: user vectors (U, d) @ item table (V, d)^T."""
    table_t = np.ascontiguousarray(item_table.T, dtype=np.float32)
    users = np.asarray(user_vectors, dtype=np.float32)
    return lambda rows: users[rows] @ table_t


def ranking_metrics(ranks: np.ndarray, k: int = 10, mrr_k: int = 20) -> dict[str, float]:
    """HR@k, NDCG@k (one relevant item: 1/log2(rank + 1)) and MRR@mrr_k, averaged over users."""
    ranks = np.asarray(ranks, dtype=np.float64)
    if len(ranks) == 0:
        raise ValueError("no users to evaluate")
    hit = ranks <= k
    ndcg = np.where(hit, 1.0 / np.log2(np.where(hit, ranks, 1.0) + 1.0), 0.0)
    rr = np.where(ranks <= mrr_k, 1.0 / np.where(np.isfinite(ranks), ranks, 1.0), 0.0)
    return {
        f"hr_at_{k}": float(hit.mean()),
        f"ndcg_at_{k}": float(ndcg.mean()),
        f"mrr_at_{mrr_k}": float(rr.mean()),
    }


def hit_rate_curve(ranks: np.ndarray, k_max: int) -> np.ndarray:
    """HR@K for K = 1..k_max."""
    ranks = np.asarray(ranks, dtype=np.float64)
    return np.array([(ranks <= k).mean() for k in range(1, k_max + 1)])


def ranks_in_lists(lists: list[np.ndarray], targets: np.ndarray, exclude: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    """Rank of each target inside a given ordered list of items (e.g. the oracle's top-k), after removing the
    excluded items; a target absent from its list gets NEVER."""
    ranks = np.full(len(targets), NEVER)
    for r, (items, target) in enumerate(zip(lists, targets)):
        if exclude is not None:
            banned = exclude[1][exclude[0][r] : exclude[0][r + 1]]
            items = items[~np.isin(items, banned)]
        hit = np.flatnonzero(items == target)
        if target != PAD and len(hit):
            ranks[r] = hit[0] + 1
    return ranks
