"""Headline metrics: per task, the champion model's test score, the best baseline's, and the gap between them.

"Champion model" is the model the task registers (the MLP, the sequence model chosen on validation, the
demand forecaster); the other rows of the full table are its variants, the baselines and the oracle.

The evaluate stages write full tables (every model x every metric, notes, dates) to metrics/<task>.json; those
are result files, too wide to compare runs with. This step reads them and writes the few numbers a reviewer
compares, as DVC metrics (metrics/headline.json, numbers only, so `dvc exp show` gets one column per number),
and the names that go with them (which model, which baseline, target met) to metrics/headline_models.json.

Sign convention: `gap` is positive when the model is better than the best baseline, whatever the metric's
direction; a metric where lower is better carries `_lower_better` in its key (`wape_lower_better`). A target is
met only when the gap is positive (a tie is not met).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from shopsight import paths


class HeadlineError(ValueError):
    """A full metrics file is missing or lacks the model or every baseline the headline needs."""


@dataclass(frozen=True)
class TaskHeadline:
    """Where a task's headline lives in its full metrics file."""

    task: str
    metrics_file: Path
    metric: str  # the key in metrics["test"][<model>]
    baselines: tuple[str, ...]  # the rows of metrics["test"] that are baselines (not the oracle, not model variants)
    lower_is_better: bool = False
    model_field: tuple[str, ...] = ("targets", "model")  # where the full file names the model the task registers
    default_model: str = "mlp"

    @property
    def key(self) -> str:
        return f"{self.metric}_lower_better" if self.lower_is_better else self.metric


TASKS: tuple[TaskHeadline, ...] = (
    TaskHeadline("propensity", paths.PROPENSITY_METRICS, "roc_auc", ("frequency", "recency", "bgnbd", "paretonbd"), model_field=("champion",)),
    TaskHeadline("churn", paths.CHURN_METRICS, "roc_auc", ("recency", "frequency", "bgnbd", "paretonbd"), model_field=("champion",)),
    TaskHeadline("recommender", paths.RECOMMENDER_METRICS, "ndcg_at_10", ("popularity", "cooccurrence"), model_field=("best_model",)),
    TaskHeadline("demand", paths.DEMAND_METRICS, "wape", ("seasonal_naive", "moving_average", "sf_seasonal_naive", "croston", "adida",
                                                          "imapa", "auto_ets"), lower_is_better=True,
                 model_field=("model_key",)),
)


@dataclass(frozen=True)
class Headline:
    """One task's headline: numbers for the metrics file, names for the companion file."""

    task: str
    metric: str
    key: str
    lower_is_better: bool
    model: str
    score: float | None
    best_baseline: str
    baseline_score: float | None
    gap: float | None  # positive = the model is better than the best baseline
    margin: float = 0.0  # the task's own target margin (metrics["targets"]["margin"]): "met" needs gap > margin

    @property
    def met(self) -> bool:
        return self.gap is not None and self.gap > self.margin

    def numbers(self) -> dict[str, float | None]:
        return {self.key: self.score, "best_baseline": self.baseline_score, "gap": self.gap}

    def names(self) -> dict[str, Any]:
        return {"metric": self.metric, "lower_is_better": self.lower_is_better, "model": self.model,
                "best_baseline": self.best_baseline, "met": self.met}


def _finite(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return None
    return float(value)


def task_headline(spec: TaskHeadline, metrics: dict[str, Any]) -> Headline:
    """The headline of one task from its full metrics (the content of metrics/<task>.json)."""
    model: Any = metrics
    for part in spec.model_field:
        model = model.get(part) if isinstance(model, dict) else None
    model = model or spec.default_model
    test = metrics.get("test") or {}
    if model not in test:
        raise HeadlineError(f"{spec.metrics_file}: no test row for the model {model!r} (rows: {sorted(test)})")
    sign = -1.0 if spec.lower_is_better else 1.0
    # the file's own references when it lists them (params.yaml <task>.references); a reference that is itself the
    # champion is compared with the next-best one
    references = metrics.get("references") or spec.baselines
    scored = {b: _finite(test[b].get(spec.metric)) for b in references if b in test and b != model}
    scored = {b: v for b, v in scored.items() if v is not None}
    if not scored:
        raise HeadlineError(f"{spec.metrics_file}: no baseline among {list(references)} other than {model!r} has a finite {spec.metric}")
    best = max(scored, key=lambda b: sign * scored[b])
    score = _finite(test[model].get(spec.metric))
    gap = None if score is None else sign * (score - scored[best])
    margin = _finite((metrics.get("targets") or {}).get("margin")) or 0.0
    return Headline(spec.task, spec.metric, spec.key, spec.lower_is_better, str(model), score, best, scored[best], gap, margin)


def _read(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise HeadlineError(f"{path} not found: run the pipeline first (`dvc repro`)")
    return json.loads(path.read_text())


def build_headlines() -> list[Headline]:
    """Every task's headline, read from the full metrics files the evaluate stages wrote."""
    return [task_headline(spec, _read(spec.metrics_file)) for spec in TASKS]


def write_headlines(headlines: list[Headline], metrics_path: Path = paths.HEADLINE_METRICS,
                    names_path: Path = paths.HEADLINE_MODELS) -> None:
    """metrics/headline.json (numbers only: DVC metrics) and metrics/headline_models.json (names, target met)."""
    metrics_path.parent.mkdir(parents=True, exist_ok=True)
    metrics_path.write_text(json.dumps({h.task: h.numbers() for h in headlines}, indent=2) + "\n")
    names_path.parent.mkdir(parents=True, exist_ok=True)
    names_path.write_text(json.dumps({h.task: h.names() for h in headlines}, indent=2) + "\n")


def run_headline() -> list[Headline]:
    """The DVC stage: read the full metrics files, write the headline files, return the headlines."""
    headlines = build_headlines()
    write_headlines(headlines)
    return headlines
