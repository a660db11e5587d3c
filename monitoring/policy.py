"""The drift policy: which columns count, with which test, and when a week's drift or quality drop retrains.

The thresholds live in params.yaml `monitoring.policy` and were chosen on the simulator's drift scenarios
(bench/bench_drift_policy.py prints the false-alarm and detection rates they give). This module decides;
monitoring/weekly.py measures.
"""

from __future__ import annotations

import json
import re
from dataclasses import asdict, dataclass, field
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from shopsight.config import DriftPolicyParams, StatTestParams

_WINDOW = re.compile(r"_(\d+)d$")


@dataclass
class ColumnDrift:
    column: str
    method: str
    threshold: float
    score: float
    drifted: bool


@dataclass
class SourceDrift:
    """Drift of one source (the service's inputs, the events that arrived) against the reference."""

    source: str
    reference_rows: int
    current_rows: int
    sampled: bool
    columns: list[ColumnDrift]
    counted: list[str]  # columns that count in the drift share
    critical: list[str] = field(default_factory=list)  # columns of which one drifted triggers alone
    excluded: dict[str, str] = field(default_factory=dict)  # column -> why it does not count

    @property
    def drifted_counted(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted and c.column in self.counted]

    @property
    def drifted_critical(self) -> list[str]:
        return [c.column for c in self.columns if c.drifted and c.column in self.critical]

    @property
    def share(self) -> float:
        return len(self.drifted_counted) / len(self.counted) if self.counted else 0.0

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "share": round(self.share, 4), "drifted_counted": self.drifted_counted,
                "drifted_critical": self.drifted_critical}


@dataclass
class QualityCheck:
    metric: str
    value: float | None  # None when too few matured predictions or a single class
    baseline: float | None  # the champion's test score
    rows: int
    positives: int
    window: tuple[str, str]  # prediction times whose outcome horizon has ended

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Decision:
    retrain: bool
    reasons: list[str]  # why it fires (empty when it does not)
    notes: list[str]  # what was checked and why it did not fire
    at: str
    suppressed_by_cooldown: bool = False

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @property
    def reason(self) -> str:
        return "; ".join(self.reasons) if self.reasons else "no trigger: " + "; ".join(self.notes)


def stattest_for(policy: DriftPolicyParams, column: str, categorical: bool) -> StatTestParams:
    """The stat test and threshold for one column: its per-column override, else the one for its type."""
    return policy.per_column.get(column) or (policy.categorical if categorical else policy.numerical)


def column_tests(policy: DriftPolicyParams, numerical: list[str], categorical: list[str]) -> tuple[dict[str, str], dict[str, float]]:
    """Evidently's per_column_method / per_column_threshold for these columns."""
    tests = {c: stattest_for(policy, c, False) for c in numerical} | {c: stattest_for(policy, c, True) for c in categorical}
    return {c: t.stattest for c, t in tests.items()}, {c: t.threshold for c, t in tests.items()}


def counted_features(policy: DriftPolicyParams, available: list[str], history_days: float | None = None) -> tuple[list[str], dict[str, str]]:
    """Model features that count in the drift share, and why each other one does not.

    `history_days`: days of events before the earliest reference cutoff. A `*_<w>d` window longer than that
    was truncated at the data start in the reference, so it grows naturally afterwards: it does not count.
    """
    wanted = available if policy.features is None else [c for c in policy.features if c in available]
    excluded: dict[str, str] = {}
    for c in policy.features or []:
        if c not in available:
            excluded[c] = "not a feature of this model"
    counted = []
    for c in wanted:
        m = _WINDOW.search(c)
        if c in policy.exclude:
            excluded[c] = "excluded by monitoring.policy.exclude"
        elif m and history_days is not None and int(m.group(1)) > history_days:
            excluded[c] = f"{m.group(1)}-day window truncated at the data start in the reference ({history_days:.0f} days of history)"
        else:
            counted.append(c)
    return counted, excluded


def _since(state: dict[str, Any], at: datetime) -> timedelta | None:
    last = state.get("last_trigger")
    return at - datetime.fromisoformat(last) if last else None


def decide(
    policy: DriftPolicyParams,
    sources: list[SourceDrift],
    quality: QualityCheck | None,
    state: dict[str, Any],
    at: datetime,
) -> Decision:
    """Retrain when, on a source with at least min_rows per side, the share of counted features drifted reaches
    drift_share or a critical column drifted; or when quality fell by quality_drop; unless within the cooldown."""
    reasons: list[str] = []
    notes: list[str] = []
    for s in sources:
        if min(s.reference_rows, s.current_rows) < policy.min_rows:
            notes.append(f"{s.source}: {s.current_rows} current / {s.reference_rows} reference rows < min_rows {policy.min_rows}, not judged")
            continue
        if s.counted and s.share >= policy.drift_share:
            reasons.append(
                f"{s.source}: {len(s.drifted_counted)}/{len(s.counted)} features drifted (share {s.share:.2f} >= {policy.drift_share}): "
                + ", ".join(s.drifted_counted)
            )
        elif s.counted:
            notes.append(f"{s.source}: {len(s.drifted_counted)}/{len(s.counted)} features drifted (share {s.share:.2f} < {policy.drift_share})")
        elif not s.critical:
            # a share over no feature can never fire: say so rather than pass silently
            why = "; ".join(f"{c}: {r}" for c, r in s.excluded.items()) or "no columns"
            notes.append(f"{s.source}: no feature counts in the drift share ({why}), not judged")
        if s.drifted_critical:
            scores = {c.column: c.score for c in s.columns}
            reasons.append(f"{s.source}: critical column drifted: " + ", ".join(f"{c} ({scores[c]:.3f})" for c in s.drifted_critical))
        elif s.critical:
            notes.append(f"{s.source}: no critical column drifted ({', '.join(s.critical)})")
    if quality is not None:
        if quality.value is None or quality.baseline is None or quality.rows < policy.min_outcomes:
            notes.append(f"quality: {quality.rows} matured predictions (min {policy.min_outcomes}) or no baseline, not judged")
        elif quality.baseline - quality.value >= policy.quality_drop:
            reasons.append(
                f"quality: {quality.metric} {quality.value:.3f} is {quality.baseline - quality.value:.3f} below the champion's "
                f"{quality.baseline:.3f} (>= {policy.quality_drop})"
            )
        else:
            notes.append(f"quality: {quality.metric} {quality.value:.3f} vs champion {quality.baseline:.3f} (drop < {policy.quality_drop})")
    since = _since(state, at)
    if reasons and since is not None and since < timedelta(days=policy.cooldown_days):
        notes.append(f"cooldown: last retrain trigger {since.total_seconds() / 86400:.1f} days ago (< {policy.cooldown_days} days)")
        return Decision(False, reasons, notes, at.isoformat(), suppressed_by_cooldown=True)
    return Decision(bool(reasons), reasons, notes, at.isoformat())


def load_state(path: Path) -> dict[str, Any]:
    """The persisted trigger state ({} when there is none yet)."""
    return json.loads(path.read_text()) if path.exists() else {}


def record_trigger(path: Path, decision: Decision, week: str, run: dict[str, Any] | None = None) -> dict[str, Any]:
    """Persist that a retrain was triggered (starts the cooldown); keeps a short history."""
    state = load_state(path)
    entry = {"at": decision.at, "week": week, "reason": decision.reason, "run": run or {},
             "recorded": datetime.now(timezone.utc).isoformat()}
    state = {"last_trigger": decision.at, "last_reason": decision.reason, "history": (state.get("history", []) + [entry])[-50:]}
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2, default=str))
    tmp.replace(path)  # atomic: a crash never leaves half a state file
    return state
