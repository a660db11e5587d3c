"""One interface for every model family (Keras networks, gradient-boosted trees, linear models, BTYD models,
rules, statistical forecasters, co-occurrence): `fit`, `predict`, `save`, `load`, and a registry that finds a
family by the name params.yaml gives (`get_model(kind, name)`), as RecBole's `get_model` does.

A task (propensity, churn, demand, next item) builds its dataset once, fits every candidate named in its
params on the training split, scores each on validation and test, picks the champion on validation only
(`select_champion`), and reports every candidate on test. Whatever family wins is saved with `save_candidate`
and loaded back by `load_candidate`, so the registry and the service never name a family.
"""

from __future__ import annotations

import importlib
import json
import math
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, Callable, ClassVar, Mapping, Sequence

import numpy as np

CANDIDATE_FILE = "candidate.json"

_REGISTRY: dict[str, dict[str, type["Candidate"]]] = {}


class Candidate(ABC):
    """A model of some family for one kind of task. Subclasses set `family` and implement the four methods.

    `kind` groups candidates that take the same data: "user_binary" (a user x cutoff frame -> a score per row),
    "demand" (daily series -> forecasts), "next_item" (sequences -> item scores).
    """

    kind: ClassVar[str]
    family: ClassVar[str]  # keras | lightgbm | linear | btyd | rule | statsforecast | cooccurrence | ...
    # whether `fit` stops early (or tunes) on its second argument: a user-level task then passes held-out training
    # users there (selection.early_stopping), so the validation rows that choose the champion were never looked at
    early_stopping: ClassVar[bool] = False

    def __init__(self, name: str, config: Mapping[str, Any] | None = None) -> None:
        self.name = name
        self.config = dict(config or {})

    @abstractmethod
    def fit(self, train: Any, valid: Any) -> dict[str, Any]:
        """Fit on `train` (early stopping or tuning may look at `valid`, never at test; for a class with
        `early_stopping`, a user-level task passes held-out training users as `valid`); return what to report."""

    def refit(self, rows: Any) -> dict[str, Any]:
        """Fit again on `rows` (the training and validation rows together: the latest labels before test) with what
        validation chose (boosting rounds, epochs), without looking at held-out data. The default is `fit` with
        `rows` on both sides: right for families whose fit never reads `valid` (rules, BTYD, linear, blends)."""
        return self.fit(rows, rows)

    @abstractmethod
    def predict(self, data: Any) -> Any:
        """Scores (or forecasts) for `data`, in its row order."""

    @abstractmethod
    def save(self, directory: Path) -> None:
        """Write what `load` needs into `directory` (JSON, NPY, a library's own model file: never a pickle)."""

    @classmethod
    @abstractmethod
    def load(cls, directory: Path, name: str, config: Mapping[str, Any]) -> "Candidate":
        """The candidate `save` wrote into `directory`."""


def register(kind: str, name: str) -> Callable[[type[Candidate]], type[Candidate]]:
    """Class decorator: make a family available to params.yaml under `name` for tasks of `kind`."""

    def add(cls: type[Candidate]) -> type[Candidate]:
        _REGISTRY.setdefault(kind, {})[name] = cls
        return cls

    return add


def available(kind: str) -> list[str]:
    """The candidate names registered for `kind`."""
    _import_families(kind)
    return sorted(_REGISTRY.get(kind, {}))


def get_model(kind: str, name: str, config: Mapping[str, Any] | None = None) -> Candidate:
    """A new, unfitted candidate by name; a clear error names the known ones."""
    _import_families(kind)
    try:
        cls = _REGISTRY[kind][name]
    except KeyError:
        raise ValueError(f"unknown {kind} candidate {name!r}; known: {', '.join(available(kind)) or 'none'}") from None
    return cls(name, config)


# Modules that register families for a kind: imported on first use, so TensorFlow loads only where needed.
FAMILY_MODULES: dict[str, list[str]] = {
    "user_binary": [f"shopsight.candidates.{m}" for m in ("rules", "btyd", "linear", "gbdt", "keras_mlp", "blend", "stacked")],
}


def _import_families(kind: str) -> None:
    for module in FAMILY_MODULES.get(kind, []):
        importlib.import_module(module)


def save_candidate(candidate: Candidate, directory: Path) -> None:
    """`candidate.save(directory)` plus candidate.json naming its class, so `load_candidate` needs no params."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    candidate.save(directory)
    cls = type(candidate)
    meta = {"name": candidate.name, "kind": cls.kind, "family": cls.family, "module": cls.__module__, "class": cls.__qualname__,
            "config": candidate.config}
    (directory / CANDIDATE_FILE).write_text(json.dumps(meta, indent=2, default=str))


def load_candidate(directory: Path) -> Candidate:
    """The candidate saved in `directory` by `save_candidate`, whatever its family."""
    directory = Path(directory)
    path = directory / CANDIDATE_FILE
    if not path.exists():
        raise FileNotFoundError(f"{path} not found: this directory holds no saved candidate (rerun the task's train stage)")
    meta = json.loads(path.read_text())
    cls = getattr(importlib.import_module(meta["module"]), meta["class"])
    return cls.load(directory, meta["name"], meta.get("config", {}))


def candidate_family(directory: Path) -> str:
    """The family of the candidate saved in `directory` (keras, lightgbm, ...), without loading it."""
    return json.loads((Path(directory) / CANDIDATE_FILE).read_text())["family"]


def select_champion(valid: Mapping[str, Mapping[str, float]], metric: str, lower_is_better: bool = False,
                    order: Sequence[str] | None = None, tolerance: Mapping[str, float] | None = None) -> str:
    """The candidate with the best validation `metric`; ties go to the one listed first in `order` (list the
    simpler families first, so a deep model must be strictly better to win). NaN never wins.

    `tolerance` (candidate -> allowed shortfall, e.g. `paired_bootstrap_se` for the one-standard-error rule): the
    first candidate in `order` whose shortfall to the best is within its tolerance wins, so a simpler model is kept
    unless a more complex one is better by more than the validation noise."""
    names = list(order) if order is not None else list(valid)
    scored = [(n, float(valid[n][metric])) for n in names if n in valid and metric in valid[n]]
    scored = [(n, v) for n, v in scored if math.isfinite(v)]
    if not scored:
        raise ValueError(f"no candidate has a finite validation {metric}: cannot choose a champion")
    sign = -1.0 if lower_is_better else 1.0
    best = max(sign * v for _, v in scored)
    tol = tolerance or {}
    return next(n for n, v in scored if sign * v >= best - max(float(tol.get(n, 0.0)), 0.0) - 1e-12)


def reference_unless_beaten(best: str, learned: str, reference: str, lead: float, se: float, k_se: float, where: str) -> dict[str, Any]:
    """The beat_reference choice. `best`: the best `where`; `learned`: the best candidate that is not a reference,
    `reference`: the best reference, `lead`: how far `learned` is ahead of it (negative when behind), `se`: the
    paired-bootstrap SE of that lead. A reference that is the best is served; otherwise `learned` (the best) only if
    its lead is more than `k_se` SEs (an undefined SE never counts as beaten), else the reference. What the choice
    rested on, with a note; the SE is kept either way (the registry gate allows a reference challenger that much)."""
    beaten = math.isfinite(se) and lead > k_se * se
    champion = best if best != learned or beaten else reference
    if best != learned:
        note = f"{best}, a reference, is the best {where} ({learned}, the best learned candidate, trails it by {-lead:.4f}, SE {se:.4f})"
    elif beaten:
        note = f"{best} leads the best reference {reference} {where} by {lead:.4f}, beyond {k_se:g} SE ({se:.4f})"
    else:
        note = (f"{best} leads the best reference {reference} {where} by only {lead:.4f}, within {k_se:g} SE ({se:.4f}): "
                "the reference is served")
    return {"champion": champion, "best_reference_on_valid": reference, "k_se": k_se, "lead_over_reference": round(lead, 5),
            "se_of_lead": round(se, 5) if math.isfinite(se) else None, "note": note}


def paired_bootstrap_se(y: np.ndarray, scores: Mapping[str, np.ndarray], best: str,
                        metric: Callable[..., float], n_boot: int = 200, seed: int = 0,
                        groups: np.ndarray | None = None, clusters: np.ndarray | None = None) -> dict[str, float]:
    """Standard error of metric(best) - metric(candidate) on the same rows, by a paired bootstrap over rows (each
    resample scores every candidate on the same rows; resamples with a single class are skipped). With `groups`
    (the rows' cutoffs) the metric is called as metric(y, p, groups) on the resampled rows; with `clusters` (the
    rows' users) whole users are drawn with all their rows, as rows of one user at several cutoffs are not
    independent. The one-SE rule (Breiman et al. 1984; Hastie, Tibshirani & Friedman, ESL 7.10) keeps the simplest
    candidate within one SE."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    draw = bootstrap_draw(len(y), clusters)
    names = [n for n in scores if n != best]
    diffs: dict[str, list[float]] = {n: [] for n in names}
    for _ in range(n_boot):
        idx = draw(rng)
        if len(np.unique(y[idx])) < 2:
            continue
        extra = () if groups is None else (np.asarray(groups)[idx],)
        ref = metric(y[idx], np.asarray(scores[best])[idx], *extra)
        for n in names:
            diffs[n].append(ref - metric(y[idx], np.asarray(scores[n])[idx], *extra))
    out = {best: 0.0}
    out.update({n: float(np.std(d, ddof=1)) if len(d) > 1 else math.inf for n, d in diffs.items()})
    return out


def bootstrap_draw(n: int, clusters: np.ndarray | None = None) -> Callable[[np.random.Generator], np.ndarray]:
    """A function rng -> row indices of one bootstrap resample of `n` rows: rows drawn with replacement, or, with
    `clusters` that repeat (a user's rows at several cutoffs), clusters drawn with replacement and all their rows
    taken (without repeats it is the row bootstrap, draw for draw)."""
    if clusters is None:
        return lambda rng: rng.integers(0, n, n)
    _, codes = np.unique(np.asarray(clusters), return_inverse=True)
    n_clusters = int(codes.max()) + 1 if n else 0
    if n_clusters == n:
        return lambda rng: rng.integers(0, n, n)
    order = np.argsort(codes, kind="stable")
    starts = np.searchsorted(codes[order], np.arange(n_clusters + 1))

    def draw(rng: np.random.Generator) -> np.ndarray:
        picked = rng.integers(0, n_clusters, n_clusters)
        sizes = starts[picked + 1] - starts[picked]
        offsets = np.arange(int(sizes.sum())) - np.repeat(np.cumsum(sizes) - sizes, sizes)
        return order[np.repeat(starts[picked], sizes) + offsets]

    return draw


def champion_vs_references(test: Mapping[str, Mapping[str, float]], champion: str, references: Sequence[str], metric: str,
                           lower_is_better: bool = False, margin: float = 0.0) -> dict[str, Any]:
    """The honest quality target: the champion against the strongest reference on the same test rows.

    "met" only when the champion beats the best reference by more than `margin` (in the metric's own units);
    when a reference is itself the champion, the target compares it with the next-best reference (and says so).
    """
    sign = -1.0 if lower_is_better else 1.0
    refs = [(r, float(test[r][metric])) for r in references if r in test and r != champion and metric in test[r]]
    refs = [(r, v) for r, v in refs if math.isfinite(v)]
    value = float(test[champion][metric]) if champion in test and metric in test[champion] else math.nan
    out: dict[str, Any] = {"metric": metric, "lower_is_better": lower_is_better, "champion": champion,
                           "champion_value": value if math.isfinite(value) else None, "margin": margin,
                           "champion_is_reference": champion in references}
    if not refs or not math.isfinite(value):
        out.update(best_reference=None, best_reference_value=None, gap=None, met=None,
                   note="no reference to compare with on these rows")
        return out
    best_ref, best_val = max(refs, key=lambda rv: sign * rv[1])
    gap = sign * (value - best_val)
    met = gap > margin
    which = f"{champion} (itself a reference: no other candidate won the choice)" if champion in references else champion
    out.update(best_reference=best_ref, best_reference_value=best_val, gap=gap, met=bool(met),
               note=(f"met: {which} beats {best_ref} by {gap:.4f}" if met
                     else f"not met: {best_ref} {best_val:.4f} vs {which} {value:.4f} (needs a margin over {margin})"))
    return out
