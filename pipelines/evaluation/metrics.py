"""Full-ranking metrics: every item ranked for every user, seen items excluded, in batches.

A model is anything that follows ``Recommender``: fitted on a split's training interactions, it
scores the whole catalogue for a batch of histories (a ``MemberRecommender``, such as the
synthetic oracle, scores by member and decision time instead). ``rank_targets`` turns those
scores into the 1-based rank of each held-out target among the items the user has not seen, and
``summarise`` turns ranks into HR@K, NDCG@K (one relevant item, so IDCG = 1 and NDCG =
1/log2(rank + 1)), MRR, catalogue coverage and cold-start recall: how often a target that is a
new title (released after the cut-off) is in the top 50 of the whole catalogue, and
(``cold_start_recall_at_50_among_new``) in the top 50 of the new titles alone, the candidates
most-popular-among-new orders. The second is 1 by construction once a model can offer at most 50
of the new titles to a member (a model that offers only a series' next episode does so when most
new titles are episodes of new seasons), so the quality bar reads the first. Nothing here samples
negatives: sampled metrics are known to reorder models (Krichene & Rendle, "On Sampled Metrics
for Item Recommendation", KDD 2020). A tie with the target counts against it, so a model that
scores everything equally lands at the bottom, not the top. Errors raise: a metric is never
written as 0 because scoring broke.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Protocol, runtime_checkable

import numpy as np
import torch

from pipelines.evaluation.splits import NO_TARGET, EvalSet

if TYPE_CHECKING:
    from pipelines.evaluation.splits import LeaveOneOutSplit, TemporalSplit

CUTOFFS: tuple[int, ...] = (10, 50)
"""The K of HR@K and NDCG@K."""
COVERAGE_K = 10
"""Catalogue coverage counts the items that appear in anyone's top ``COVERAGE_K``."""
COLD_START_K = 50
"""Cold-start recall counts new-title targets ranked within the top ``COLD_START_K``."""

METRIC_NAMES: tuple[str, ...] = (
    "hr_at_10",
    "hr_at_50",
    "ndcg_at_10",
    "ndcg_at_10_se",
    "ndcg_at_50",
    "mrr",
    "coverage_at_10",
    "cold_start_recall_at_50",
    "cold_start_recall_at_50_among_new",
)
"""Metric keys as logged to MLflow (MLflow metric names may not contain ``@``); ``_se`` is the
standard error of the mean before it."""


@runtime_checkable
class Recommender(Protocol):
    """What ``evaluate`` needs from a model: fit on a split, score the catalogue for histories."""

    name: str  # row label in reports and MLflow

    def fit(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        """Learn from ``split.train`` only; never look at held-out targets."""
        ...

    def score(self, histories: list[np.ndarray]) -> np.ndarray:
        """``(B, n_items)`` float scores, higher is better, for B chronological item histories."""
        ...


@runtime_checkable
class MemberRecommender(Protocol):
    """A model whose scores depend on who chooses and when, not only on the items seen.

    The synthetic world's oracle is one: its true choice model reads the member's latent taste
    and the day of the decision. So is a model that reads each member's own token features,
    which two members with the same titles need not share. ``rank_targets`` calls
    ``score_members`` for these instead of ``Recommender.score``; everything else (exclusion,
    ranks, metrics) is shared.
    """

    name: str  # row label in reports and MLflow

    def fit(self, split: LeaveOneOutSplit | TemporalSplit) -> None:
        """Learn from ``split.train`` only (or just its index spaces); never look at targets."""
        ...

    def score_members(
        self,
        users: np.ndarray,
        histories: list[np.ndarray],
        seen: list[np.ndarray],
        at_ts: np.ndarray,
    ) -> np.ndarray:
        """``(B, n_items)`` float scores for members ``users`` ((B,) int64 user index) with model
        inputs ``histories`` (as ``Recommender.score`` gets them), who had seen ``seen[b]`` (every
        item before the targets, oldest first) and choose at ``at_ts`` ((B,) int64 unix seconds,
        the first target's time)."""
        ...


@dataclass(frozen=True)
class RankedTargets:
    """Per-user ranks of the held-out targets, the raw material for every metric and plot."""

    ranks: np.ndarray  # (U, k) float64 1-based rank among unseen items; NaN where NO_TARGET
    targets: np.ndarray  # (U, k) int64 item index (NO_TARGET pads)
    target_ts: np.ndarray  # (U, k) int64 unix seconds of each target
    history_length: np.ndarray  # (U,) int64 items the user had seen before the targets
    top_items: np.ndarray  # (U, COVERAGE_K) int64 best unseen items per user, -1 if fewer exist
    n_items: int  # catalogue size the ranks are out of
    # (U, k) float64 1-based rank among the unseen new items (``rank_targets``' ``new_items``);
    # NaN where the target is not new or NO_TARGET; None when no new items were given
    new_ranks: np.ndarray | None = None


def exclusion_mask(exclude: list[np.ndarray], n_items: int) -> torch.Tensor:
    """``(B, n_items)`` bool, True for every item in each user's ``exclude`` array."""
    mask = torch.zeros((len(exclude), n_items), dtype=torch.bool)
    lengths = [len(items) for items in exclude]
    if sum(lengths):
        rows = torch.repeat_interleave(torch.arange(len(exclude)), torch.tensor(lengths))
        cols = torch.from_numpy(np.concatenate(exclude).astype(np.int64))
        mask[rows, cols] = True
    return mask


def full_ranks(scores: torch.Tensor, targets: torch.Tensor, excluded: torch.Tensor) -> torch.Tensor:
    """1-based rank of each target among the non-excluded items; ties count against the target.

    ``scores`` (B, N) float, ``targets`` (B, k) int64 with NO_TARGET pads, ``excluded`` (B, N)
    bool. The target itself is never excluded from its own ranking, even if it is in the history
    (a re-watch). Returns (B, k) float64 with NaN at pads.
    """
    safe_targets = targets.clamp(min=0)  # (B, k)
    target_scores = scores.gather(1, safe_targets)  # (B, k)
    target_excluded = excluded.gather(1, safe_targets)  # (B, k)
    candidates = ~excluded
    ranks = torch.empty(targets.shape, dtype=torch.float64)
    for j in range(targets.shape[1]):
        # Counts the target itself too when it is not excluded, which supplies the "1 +".
        at_least = ((scores >= target_scores[:, j : j + 1]) & candidates).sum(dim=1)  # (B,)
        ranks[:, j] = (at_least + target_excluded[:, j].long()).double()
    ranks[targets == NO_TARGET] = float("nan")
    return ranks


def top_unseen(scores: torch.Tensor, excluded: torch.Tensor, k: int) -> torch.Tensor:
    """(B, k) int64 best non-excluded items per row, best first; -1 where fewer than k exist."""
    masked = scores.masked_fill(excluded, float("-inf"))
    k = min(k, scores.shape[1])
    _, items = masked.topk(k, dim=1)  # (B, k)
    return items.masked_fill(excluded.gather(1, items), -1)


def _checked_scores(raw: object, batch: int, n_items: int, name: str) -> torch.Tensor:
    scores = torch.as_tensor(raw)
    if scores.shape != (batch, n_items):
        raise ValueError(
            f"{name}.score returned shape {tuple(scores.shape)}, expected ({batch}, {n_items}): "
            "one row per history and one column per catalogue item"
        )
    scores = scores.float()
    if torch.isnan(scores).any():
        raise ValueError(f"{name}.score returned NaN scores; fix the model rather than the metric")
    return scores


def _score_rows(
    recommender: Recommender | MemberRecommender, eval_set: EvalSet, start: int, stop: int
) -> object:
    """Raw scores of ``eval_set`` rows ``start:stop``: by member and time for a
    ``MemberRecommender``, else from the item histories alone."""
    if isinstance(recommender, MemberRecommender):
        return recommender.score_members(
            eval_set.users[start:stop],
            eval_set.histories[start:stop],
            eval_set.exclude[start:stop],
            eval_set.target_ts[start:stop, 0],
        )
    return recommender.score(eval_set.histories[start:stop])


def rank_targets(
    recommender: Recommender | MemberRecommender,
    eval_set: EvalSet,
    batch_size: int = 1024,
    new_items: np.ndarray | None = None,
) -> RankedTargets:
    """Score ``eval_set`` in batches of users and rank every target against the full catalogue.

    With ``new_items`` ((n_items,) bool, a temporal split's titles released after the cut-off)
    each new-title target is also ranked among the unseen new titles alone (``new_ranks``).
    """
    if len(eval_set) == 0 or eval_set.n_cases == 0:
        raise ValueError("the evaluation set has no targets; check the split's parameters")
    if new_items is not None and new_items.shape != (eval_set.n_items,):
        raise ValueError(f"new_items must be ({eval_set.n_items},) bool, got {new_items.shape}")
    old = None if new_items is None else ~torch.from_numpy(new_items.astype(bool))  # (N,)
    ranks, tops, new_ranks = [], [], []
    for start in range(0, len(eval_set), batch_size):
        stop = min(start + batch_size, len(eval_set))
        raw = _score_rows(recommender, eval_set, start, stop)
        scores = _checked_scores(raw, stop - start, eval_set.n_items, recommender.name)
        excluded = exclusion_mask(eval_set.exclude[start:stop], eval_set.n_items)
        targets = torch.from_numpy(eval_set.targets[start:stop])
        ranks.append(full_ranks(scores, targets, excluded).numpy())
        tops.append(top_unseen(scores, excluded, COVERAGE_K).numpy())
        if old is not None:
            among_new = full_ranks(scores, targets, excluded | old[None, :]).numpy()  # (B, k)
            target_old = old[targets.clamp(min=0)].numpy()  # (B, k)
            new_ranks.append(np.where(target_old, np.nan, among_new))
    return RankedTargets(
        ranks=np.concatenate(ranks),
        targets=eval_set.targets,
        target_ts=eval_set.target_ts,
        history_length=np.array([len(items) for items in eval_set.exclude], dtype=np.int64),
        top_items=np.concatenate(tops),
        n_items=eval_set.n_items,
        new_ranks=np.concatenate(new_ranks) if new_ranks else None,
    )


def ranks_from_top_k(top_k: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Ranks from top-K lists instead of scores: position + 1 if listed, else ``inf``.

    ``top_k`` (U, K) int64 best-first lists that already exclude seen items; ``targets`` (U, k).
    Metrics at cut-offs up to K are exact; MRR becomes MRR@K (unlisted targets add 0).
    """
    hits = top_k[:, None, :] == targets[:, :, None]  # (U, k, K)
    ranks = np.where(hits.any(axis=2), hits.argmax(axis=2) + 1.0, np.inf)
    ranks[targets == NO_TARGET] = np.nan
    return ranks


def hit_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-case 1.0 when the target is in the top ``k``, else 0.0 (same shape as ``ranks``)."""
    return (ranks <= k).astype(np.float64)


def ndcg_at(ranks: np.ndarray, k: int) -> np.ndarray:
    """Per-case NDCG@k with one relevant item: 1/log2(rank + 1) inside the top ``k``, else 0."""
    return np.where(ranks <= k, 1.0 / np.log2(ranks + 1.0), 0.0)


def standard_error(values: np.ndarray) -> float:
    """Standard error of the mean of ``values`` (NaN for fewer than two)."""
    if values.size < 2:
        return float("nan")
    return float(values.std(ddof=1) / np.sqrt(values.size))


def paired_ndcg_difference(
    ranked: RankedTargets, reference: RankedTargets, k: int = 10
) -> dict[str, float]:
    """NDCG@k of ``ranked`` minus ``reference``'s over the cases both ranked, paired per case.

    Both must rank the same targets (one split). Differencing case by case cancels the spread
    between easy and hard cases, which two separate standard errors would count twice, so a
    small gap between two models can be told from noise. Returns the mean difference, its
    standard error, a normal 95 % interval and the number of cases.
    """
    if ranked.ranks.shape != reference.ranks.shape or not np.array_equal(
        ranked.targets, reference.targets
    ):
        raise ValueError("paired differences need two rankings of the same targets")
    both = ~np.isnan(ranked.ranks) & ~np.isnan(reference.ranks)
    if not both.any():
        raise ValueError("no case was ranked by both models")
    diff = ndcg_at(ranked.ranks[both], k) - ndcg_at(reference.ranks[both], k)
    mean, se = float(diff.mean()), standard_error(diff)
    return {
        f"ndcg_at_{k}_difference": mean,
        "se": se,
        "ci95_low": mean - 1.96 * se,
        "ci95_high": mean + 1.96 * se,
        "n_cases": float(diff.size),
    }


def summarise(ranked: RankedTargets, new_items: np.ndarray | None = None) -> dict[str, float]:
    """HR@K, NDCG@K, MRR, coverage@10 and (given ``new_items``) cold-start recall@50.

    Averages are over (user, target) pairs; ``ndcg_at_10_se`` is the standard error of the
    NDCG@10 mean over them (about 0.008 on ml-100k's 943 users), the size of a difference that
    one evaluation cannot tell from noise. ``new_items`` is an ``(n_items,)`` bool mask of titles
    released after the cut-off; cold-start recall is left out when no target is one (it is
    undefined, not 0), and ``n_cold_start_cases`` says so. ``cold_start_recall_at_50`` counts
    the target in the top 50 of the whole catalogue; ``cold_start_recall_at_50_among_new``, in
    the top 50 of the new titles, when ``ranked`` came from ``rank_targets(..., new_items=...)``.
    """
    ranks = ranked.ranks
    valid = ~np.isnan(ranks)
    flat = ranks[valid]
    if flat.size == 0:
        raise ValueError("no ranked targets to summarise")
    if (flat < 1).any():
        raise ValueError("ranks are 1-based; got a rank below 1")
    metrics: dict[str, float] = {}
    for k in CUTOFFS:
        metrics[f"hr_at_{k}"] = float(hit_at(flat, k).mean())
        metrics[f"ndcg_at_{k}"] = float(ndcg_at(flat, k).mean())
        if k == 10:
            metrics["ndcg_at_10_se"] = standard_error(ndcg_at(flat, k))
    metrics["mrr"] = float((1.0 / flat).mean())
    listed = ranked.top_items[ranked.top_items >= 0]
    metrics["coverage_at_10"] = float(np.unique(listed).size / ranked.n_items)
    metrics["n_cases"] = float(flat.size)
    if new_items is not None:
        if new_items.shape != (ranked.n_items,):
            raise ValueError(f"new_items must be ({ranked.n_items},) bool, got {new_items.shape}")
        cold = valid & new_items[ranked.targets.clip(min=0)]
        metrics["n_cold_start_cases"] = float(cold.sum())
        if cold.any():
            metrics["cold_start_recall_at_50"] = float((ranks[cold] <= COLD_START_K).mean())
            if ranked.new_ranks is not None:
                among_new = ranked.new_ranks[cold] <= COLD_START_K
                metrics["cold_start_recall_at_50_among_new"] = float(among_new.mean())
    return metrics


def evaluate(
    recommender: Recommender | MemberRecommender,
    eval_set: EvalSet,
    batch_size: int = 1024,
    new_items: np.ndarray | None = None,
) -> dict[str, float]:
    """Metrics of a fitted ``recommender`` on ``eval_set`` (e.g. ``split.test``).

    Pass ``new_items=split.new_items`` for a temporal split to get cold-start recall. Raises on
    an empty set, a wrong score shape or NaN scores.
    """
    return summarise(rank_targets(recommender, eval_set, batch_size, new_items), new_items)
