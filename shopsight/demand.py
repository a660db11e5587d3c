"""Demand forecast: daily units sold per item and per category for the next `demand.horizon_days`.

Series are daily NET units (UTC days): units purchased minus units returned, floored at 0 per item and day,
zeros where nothing sold, up to the last UTC day the data covers whole (a partly observed last day would read
as low sales). A return is a `remove_from_cart` event of an item the same user purchased at or before that
time (online_retail ingests cancellation invoices that way); it counts on its own day, capped at what that
user had bought of the item. A removal before any purchase (a clickstream cart change) is not a return.
Category series are sums of their items' net units.

Split by time on the day axis: the test window is the last `horizon` days, the validation window the
`horizon` days before it; training data ends where the validation window starts. Every candidate family
(rules, statsforecast methods, the Keras CNN/LSTM, a per-series choice between them) sits behind
`shopsight.candidates.Candidate` (kind "demand"): fitted on the training days, scored on validation, the
champion chosen on validation item WAPE (ties to the candidate listed first in `demand.candidates`), and every
candidate reported on test. Metrics: WAPE (sum |error| / sum actual; the all-zero forecast scores exactly 1.0)
and MASE (mean |error| over the in-sample mean |y_t - y_{t-season}|, averaged over series with a non-zero scale).
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.candidates import (
    FAMILY_MODULES,
    Candidate,
    candidate_family,
    champion_vs_references,
    get_model,
    load_candidate,
    paired_bootstrap_se,
    reference_unless_beaten,
    save_candidate,
    select_champion,
)
from shopsight.config import DemandParams, Params
from shopsight.feature_sql import connection

DEMAND_DIR = paths.ARTIFACTS_DIR / "demand"
DEMAND_METRICS = paths.METRICS_DIR / "demand.json"
DEMAND_PLOTS = paths.PLOTS_DIR / "demand"
LEVELS = ("item", "category")
DEMAND_KEYS = ["wape", "mase", "wape_category", "mase_category"]
CANDIDATES_SUBDIR = "candidates"  # artifacts/demand/candidates/<name>: every fitted candidate, for evaluate
SELECTION_FILE = "selection.json"  # artifacts/demand/selection.json: validation metrics and the champion
SERVING_FILE = "demand_config.json"

# One module per family; imported on first use (get_model), so TensorFlow loads only for the Keras family.
for _module in ("shopsight.demand_rules", "shopsight.demand_statsforecast", "shopsight.demand_keras", "shopsight.demand_choice"):
    if _module not in FAMILY_MODULES.setdefault("demand", []):
        FAMILY_MODULES["demand"].append(_module)


@dataclass
class DemandSeries:
    """Daily units: `units[s, d]` for series `ids[s]` of `levels[s]` on day `days[d]` (consecutive UTC dates)."""

    ids: list[str]
    levels: list[str]
    days: pd.DatetimeIndex
    units: np.ndarray

    def until(self, day_index: int) -> "DemandSeries":
        """The same series, days before `day_index` only (what a model fitted at that origin may see)."""
        return DemandSeries(self.ids, self.levels, self.days[:day_index], self.units[:, :day_index])


@dataclass
class DemandWindow:
    """What every candidate forecasts from: per row a series (id, level), its daily history ending the day
    before `start`, and the `horizon` days to forecast; `actual` holds the true units when known."""

    ids: list[str]
    levels: list[str]
    history: np.ndarray  # [n, t] units, oldest first
    start: pd.DatetimeIndex  # first forecast day of each row
    horizon: int
    actual: np.ndarray | None = field(default=None)

    @property
    def is_category(self) -> np.ndarray:
        return np.asarray(self.levels) == "category"

    def rows(self, sel: np.ndarray) -> "DemandWindow":
        """The rows `sel` (indices or a mask) of this window."""
        idx = np.flatnonzero(sel) if np.asarray(sel).dtype == bool else np.asarray(sel, dtype=int)
        return DemandWindow([self.ids[i] for i in idx], [self.levels[i] for i in idx], self.history[idx], self.start[idx],
                            self.horizon, None if self.actual is None else self.actual[idx])


def window_at(series: DemandSeries, origin: int, horizon: int, with_actual: bool = True) -> DemandWindow:
    """Every series forecast from `origin` (index of the first forecast day) with all history before it."""
    actual = series.units[:, origin : origin + horizon] if with_actual else None
    start = pd.DatetimeIndex([series.days[0] + pd.Timedelta(days=origin)] * len(series.ids))
    return DemandWindow(list(series.ids), list(series.levels), series.units[:, :origin], start, horizon, actual)


def daily_units(events: str | Path | pd.DataFrame) -> DemandSeries:
    """Item and category daily NET unit series from canonical events: purchased minus returned units per item
    and day, floored at 0 (returns: see the module docstring).

    Days run from the first event's UTC day to the last day that ends by the last event: data ending at 16:00
    leaves out that day, so no window (the test window above all) counts unobserved hours as zero sales.
    """
    con = connection()
    if isinstance(events, (str, Path)):
        source = f"read_parquet('{Path(events).as_posix()}')"
    else:
        con.register("_demand_events", events)
        source = "_demand_events"
    try:
        span = con.execute(f"SELECT min(timestamp), max(timestamp) FROM {source}").fetchone()
        sold = con.execute(
            f"""WITH ev AS (SELECT user_id, item_id, coalesce(category, '(none)') AS category, event_type, timestamp,
                                   coalesce(quantity, 1)::DOUBLE AS q FROM {source}),
                buys AS (SELECT user_id, item_id, timestamp, q FROM ev WHERE event_type = 'purchase'),
                removals AS (SELECT row_number() OVER () AS rid, * FROM ev WHERE event_type = 'remove_from_cart'),
                returned AS (  -- a removal counts only for what the same user bought of that item at or before it
                    SELECT r.item_id, r.category, r.timestamp, least(any_value(r.q), sum(b.q)) AS q
                    FROM removals r JOIN buys b ON b.user_id = r.user_id AND b.item_id = r.item_id AND b.timestamp <= r.timestamp
                    GROUP BY r.rid, r.item_id, r.category, r.timestamp),
                moves AS (SELECT item_id, category, timestamp, q FROM ev WHERE event_type = 'purchase'
                          UNION ALL SELECT item_id, category, timestamp, -q FROM returned)
            SELECT CAST(date_trunc('day', timestamp) AS DATE) AS day, item_id, category, greatest(sum(q), 0)::DOUBLE AS units
            FROM moves GROUP BY ALL"""
        ).df()
        items = con.execute(f"SELECT DISTINCT item_id, coalesce(category, '(none)') AS category FROM {source}").df()
    finally:
        if source == "_demand_events":
            con.unregister("_demand_events")
    if span[0] is None:
        raise ValueError("no events: cannot build demand series")
    first, end = (pd.Timestamp(t).tz_convert("UTC").floor("D").tz_localize(None) for t in span)
    days = pd.date_range(first, end, freq="D", inclusive="left")
    sold["day"] = pd.to_datetime(sold["day"])
    sold = sold[sold["day"] < end]  # the partly observed last day
    item_ids = sorted(items["item_id"].astype(str).unique())
    cat_ids = sorted(items["category"].astype(str).unique())
    ids = item_ids + cat_ids
    levels = ["item"] * len(item_ids) + ["category"] * len(cat_ids)
    units = np.zeros((len(ids), len(days)), dtype="float64")
    day_pos = pd.Series(np.arange(len(days)), index=days)
    item_pos = pd.Series(np.arange(len(item_ids)), index=item_ids)
    cat_pos = pd.Series(np.arange(len(cat_ids)) + len(item_ids), index=cat_ids)
    d = day_pos.reindex(sold["day"]).to_numpy()
    np.add.at(units, (item_pos.reindex(sold["item_id"].astype(str)).to_numpy(), d), sold["units"].to_numpy())
    np.add.at(units, (cat_pos.reindex(sold["category"].astype(str)).to_numpy(), d), sold["units"].to_numpy())
    return DemandSeries(ids, levels, days, units)


def split_origins(n_days: int, cfg: DemandParams) -> dict[str, list[int]]:
    """Forecast origins (index of the first forecast day): train windows, the validation and the test origin."""
    h, w = cfg.horizon_days, cfg.input_days
    test, valid = n_days - h, n_days - 2 * h
    train = list(range(w, valid - h + 1, cfg.window_step_days))
    if valid < w or not train:
        raise ValueError(
            f"{n_days} days of data are too few for demand.input_days={w} and horizon_days={h} "
            f"(need at least {w + 3 * h}); generate more days or shorten them in params.yaml"
        )
    return {"train": train, "valid": [valid], "test": [test]}


def window_inputs(history: np.ndarray, first_target_days: pd.DatetimeIndex | list, is_category: np.ndarray, horizon: int) -> tuple[dict, np.ndarray]:
    """Model inputs from raw unit windows [n, input_days] ending the day before each row's first target day.

    Returns ({"window", "context", "baseline"}, scale [n]); the model's output times `scale` is units. This one
    function builds the inputs for training, evaluation and the service.
    """
    history = np.asarray(history, dtype="float64")
    n, w = history.shape
    mean = history.mean(axis=1)
    scale = 1.0 + mean
    first = pd.DatetimeIndex(first_target_days)
    first_dow = first.dayofweek.to_numpy()
    in_dow = (first_dow[:, None] + np.arange(-w, 0)[None, :]) % 7
    out_dow = (first_dow[:, None] + np.arange(horizon)[None, :]) % 7
    eye = np.eye(7, dtype="float32")
    window = np.concatenate([(history / scale[:, None])[:, :, None].astype("float32"), eye[in_dow]], axis=2)
    context = np.concatenate(
        [eye[out_dow].reshape(n, horizon * 7), np.log1p(scale)[:, None], np.asarray(is_category, dtype="float32")[:, None]], axis=1
    ).astype("float32")
    baseline = (mean / scale)[:, None].astype("float32")
    return {"window": window, "context": context, "baseline": baseline}, scale


def _windows(series: DemandSeries, origins: list[int], rows: np.ndarray, cfg: DemandParams, with_targets: bool = True):
    w, h = cfg.input_days, cfg.horizon_days
    hist = np.concatenate([series.units[rows, o - w : o] for o in origins])
    first = np.repeat(series.days[origins], len(rows))
    is_cat = np.tile(np.asarray(series.levels)[rows] == "category", len(origins))
    inputs, scale = window_inputs(hist, first, is_cat, h)
    target = np.concatenate([series.units[rows, o : o + h] for o in origins]) if with_targets else None
    return inputs, scale, target


def seasonal_naive(history: np.ndarray, horizon: int, season: int) -> np.ndarray:
    """Repeat the last `season` days: forecast[t] = history[-season + t mod season]."""
    last = np.asarray(history)[:, -season:]
    return np.tile(last, (1, int(np.ceil(horizon / season))))[:, :horizon]


def moving_average(history: np.ndarray, horizon: int, days: int) -> np.ndarray:
    """The mean of the last `days` days, flat over the horizon."""
    return np.repeat(np.asarray(history)[:, -days:].mean(axis=1, keepdims=True), horizon, axis=1)


def wape(actual: np.ndarray, forecast: np.ndarray) -> float:
    """Weighted absolute percentage error: sum |actual - forecast| / sum |actual|."""
    denom = np.abs(actual).sum()
    return float(np.abs(actual - forecast).sum() / denom) if denom > 0 else float("nan")


def mase(actual: np.ndarray, forecast: np.ndarray, in_sample: np.ndarray, season: int) -> float:
    """Mean absolute scaled error per series (scale: in-sample seasonal-naive MAE), averaged over series with a
    non-zero scale."""
    scale = np.abs(in_sample[:, season:] - in_sample[:, :-season]).mean(axis=1)
    ok = scale > 0
    if not ok.any():
        return float("nan")
    return float((np.abs(actual - forecast).mean(axis=1)[ok] / scale[ok]).mean())


def moving_median(history: np.ndarray, horizon: int, days: int) -> np.ndarray:
    """The median of the last `days` days, flat over the horizon (the MAE-optimal level of a stable series:
    zero for an item that sells on fewer than half of the days)."""
    return np.repeat(np.median(np.asarray(history)[:, -days:], axis=1, keepdims=True), horizon, axis=1)


def weekday_profile(units: np.ndarray, days: pd.DatetimeIndex, weeks: int) -> np.ndarray:
    """Pooled day-of-week factors [7] (Monday first, mean 1) over the last `weeks` whole weeks of `units`."""
    n = min(units.shape[1], 7 * weeks)
    if n == 0:
        return np.ones(7)
    per_day = np.asarray(units)[:, -n:].sum(axis=0)
    dow = days[-n:].dayofweek.to_numpy()
    totals = np.bincount(dow, weights=per_day, minlength=7) / np.maximum(np.bincount(dow, minlength=7), 1)
    return totals * 7 / totals.sum() if totals.sum() > 0 else np.ones(7)


def apply_weekday_profile(flat: np.ndarray, start: pd.DatetimeIndex, profile: np.ndarray) -> np.ndarray:
    """A forecast reshaped by day-of-week factors (a closed day gets 0; the weekly total stays the same)."""
    h = flat.shape[1]
    dow = (start.dayofweek.to_numpy()[:, None] + np.arange(h)[None, :]) % 7
    return flat * np.asarray(profile)[dow]


def level_metrics(window: DemandWindow, forecast: np.ndarray, season: int) -> dict[str, float | None]:
    """Item and category WAPE and MASE of `forecast` against `window.actual` (null where undefined)."""
    levels = np.asarray(window.levels)
    row: dict[str, float | None] = {}
    for lvl in LEVELS:
        sel = levels == lvl
        suffix = "" if lvl == "item" else f"_{lvl}"
        for key, value in ((f"wape{suffix}", wape(window.actual[sel], forecast[sel])),
                           (f"mase{suffix}", mase(window.actual[sel], forecast[sel], window.history[sel], season))):
            row[key] = value if math.isfinite(value) else None
    return row


def candidate_config(cfg: DemandParams) -> dict[str, Any]:
    """What a demand candidate needs: the shared horizon/season settings plus every family's own section (each
    family reads its own keys; a per-series choice passes it on to its members); saved with the candidate, so
    serving needs no params.yaml."""
    return {
        "horizon_days": cfg.horizon_days, "input_days": cfg.input_days, "season_days": cfg.season_days,
        "window_step_days": cfg.window_step_days, "min_train_units": cfg.min_train_units,
        "moving_average_days": cfg.moving_average_days, "moving_median_days": cfg.moving_median_days,
        "model": cfg.model.model_dump(), "statsforecast": cfg.statsforecast.model_dump(),
        "per_series_choice": cfg.per_series_choice.model_dump(),
    }


def choose_demand_champion(window: DemandWindow, forecasts: dict[str, np.ndarray], valid_metrics: dict[str, dict],
                           cfg: DemandParams) -> dict[str, Any]:
    """The champion under `demand.selection.rule`: the lowest validation item WAPE, and with beat_reference (the
    default), where that is not a reference, only if it beats the best reference by more than k_se standard errors
    of the WAPE difference (a paired bootstrap over the item series: each resample scores both forecasts on the same
    series' days); otherwise the best reference is served. Returns the champion and what the choice rested on."""
    sel = cfg.selection
    best = select_champion(valid_metrics, "wape", lower_is_better=True, order=cfg.candidates)
    out: dict[str, Any] = {"rule": sel.rule, "best_on_valid": best, "champion": best}
    scored = [n for n in cfg.candidates if n in forecasts and math.isfinite(_or_inf(valid_metrics[n].get("wape")))]
    refs = [n for n in scored if n in cfg.references]
    learned = [n for n in scored if n not in cfg.references]
    if sel.rule == "best" or not refs or not learned:
        return out
    ref = select_champion({r: valid_metrics[r] for r in refs}, "wape", lower_is_better=True, order=cfg.candidates)
    top = select_champion({n: valid_metrics[n] for n in learned}, "wape", lower_is_better=True, order=cfg.candidates)
    items = ~window.is_category
    actual = window.actual[items]
    series_of_cell = np.repeat(np.arange(len(actual)), actual.shape[1])
    se = paired_bootstrap_se(actual.ravel(), {n: forecasts[n][items].ravel() for n in (top, ref)}, top, wape, sel.n_boot, sel.seed,
                             clusters=series_of_cell)[ref]
    lead = valid_metrics[ref]["wape"] - valid_metrics[top]["wape"]  # lower is better: the WAPE it saves
    out.update(best_learned_on_valid=top, n_boot=sel.n_boot)
    out.update(reference_unless_beaten(best, top, ref, lead, se, sel.k_se, "on validation item WAPE"))
    return out


def train_demand(params: Params, events_path: Path = paths.EVENTS, out_dir: Path = DEMAND_DIR) -> dict:
    """Fit every candidate of `demand.candidates` on the days before the validation window, score each on the
    validation window, choose the champion on validation item WAPE; save every candidate under
    artifacts/demand/candidates/<name>, the champion itself in artifacts/demand (what the registry copies and
    `DemandScorer` loads) with the stored recent history of every series, and selection.json."""
    import shutil

    cfg = params.demand
    series = daily_units(events_path)
    origins = split_origins(len(series.days), cfg)
    v = origins["valid"][-1]
    train, valid = series.until(v), window_at(series, v, cfg.horizon_days)
    if out_dir.exists():
        shutil.rmtree(out_dir)  # a candidate dropped from params must not linger
    out_dir.mkdir(parents=True)
    valid_metrics, fit_report, forecasts = {}, {}, {}
    fitted: dict[str, Candidate] = {}
    for name in cfg.candidates:
        candidate = get_model("demand", name, candidate_config(cfg))
        t0 = time.perf_counter()
        report = candidate.fit(train, valid)
        fit_s = time.perf_counter() - t0
        t0 = time.perf_counter()
        forecasts[name] = forecast = candidate.predict(valid)
        valid_metrics[name] = level_metrics(valid, forecast, cfg.season_days)
        fit_report[name] = {"family": type(candidate).family, "fit_s": round(fit_s, 2),
                            "predict_s": round(time.perf_counter() - t0, 2), **(report or {})}
        save_candidate(candidate, out_dir / CANDIDATES_SUBDIR / name)
        fitted[name] = candidate
    rule = choose_demand_champion(valid, forecasts, valid_metrics, cfg)
    champion = rule["champion"]
    save_candidate(fitted[champion], out_dir)
    # as much history as any family reads in evaluation, so a stored series is served as it was evaluated
    keep = max(cfg.input_days, cfg.serving_history_days, cfg.statsforecast.history_days, cfg.moving_average_days,
               cfg.moving_median_days, cfg.season_days)
    serving = {
        "task": "demand", "champion": champion, "horizon_days": cfg.horizon_days, "input_days": cfg.input_days,
        "history_days": keep, "last_day": str(series.days[-1].date()),
        # the latest history of every series, so the service can forecast a known series from its id alone
        "recent": {lvl: {sid: series.units[i, -keep:].round(4).tolist() for i, sid in enumerate(series.ids) if series.levels[i] == lvl}
                   for lvl in LEVELS},
    }
    (out_dir / SERVING_FILE).write_text(json.dumps(serving))
    selection = {"champion": champion, "champion_family": type(fitted[champion]).family, "selected_on": "valid", "rule": rule,
                 "gate_rows": gate_rows(valid),
                 "valid_window": [str(series.days[v].date()), str(series.days[v + cfg.horizon_days - 1].date())],
                 "valid": valid_metrics, "fit": fit_report, "days": len(series.days)}
    (out_dir / SELECTION_FILE).write_text(json.dumps(selection, indent=2))
    _write_training_history(fit_report)
    return selection


def gate_rows(valid: DemandWindow) -> dict[str, str]:
    """What the registry gate needs (shopsight.registry.champion_scores): a fingerprint of the validation window (series,
    start, actual units) and its first day, which is also the first day the champion was not fitted on."""
    import hashlib

    digest = hashlib.sha256()
    for part in ("\x1f".join(valid.ids), "\x1f".join(valid.levels), valid.start.astype("int64").to_numpy().tobytes(),
                 np.ascontiguousarray(valid.actual, dtype="float64").tobytes()):
        digest.update(part.encode() if isinstance(part, str) else part)
    first = pd.Timestamp(valid.start.min())
    first = (first.tz_localize("UTC") if first.tzinfo is None else first).isoformat()
    return {"valid_fingerprint": digest.hexdigest()[:16], "valid_first_cutoff": first, "labels_until": first}


def _write_training_history(fit_report: dict[str, dict]) -> None:
    """plots/demand/history.csv: validation loss per epoch of each Keras candidate (val_loss: the first one)."""
    curves = {name: r["val_loss"] for name, r in fit_report.items() if r.get("val_loss")}
    frame = pd.DataFrame({"epoch": range(1, max((len(c) for c in curves.values()), default=0) + 1)})
    for k, (name, curve) in enumerate(curves.items()):
        frame["val_loss" if k == 0 else f"val_loss_{name}"] = pd.Series(curve, dtype="float64")
    if not curves:
        frame["val_loss"] = pd.Series(dtype="float64")
    DEMAND_PLOTS.mkdir(parents=True, exist_ok=True)
    frame.to_csv(DEMAND_PLOTS / "history.csv", index=False)


def evaluate_demand(params: Params, events_path: Path = paths.EVENTS, model_dir: Path = DEMAND_DIR) -> dict:
    """Every candidate saved by train_demand scored on the test window (report only: the champion was chosen
    on validation); metrics/demand.json by the metrics contract, plots/demand/forecast.csv and forecast.png."""
    cfg = params.demand
    h = cfg.horizon_days
    selection = json.loads((model_dir / SELECTION_FILE).read_text())
    champion = selection["champion"]
    series = daily_units(events_path)
    o = split_origins(len(series.days), cfg)["test"][0]
    window = window_at(series, o, h)
    levels = np.asarray(series.levels)
    forecasts, test = {}, {}
    for name in selection["valid"]:
        candidate = load_candidate(model_dir / CANDIDATES_SUBDIR / name)
        forecasts[name] = candidate.predict(window)
        test[name] = level_metrics(window, forecasts[name], cfg.season_days)
    families = {name: candidate_family(model_dir / CANDIDATES_SUBDIR / name) for name in selection["valid"]}
    references = [r for r in cfg.references if r in test]
    stats = [n for n in references if families[n] == "statsforecast"]
    best_stats = min(stats, key=lambda n: _or_inf(selection["valid"][n]["wape"])) if stats else None  # best on VALIDATION
    targets = champion_vs_references(_finite(test), champion, references, "wape", lower_is_better=True)
    targets_mase = champion_vs_references(_finite(test), champion, references, "mase", lower_is_better=True)
    metrics = {
        "main_metric": "wape", "lower_is_better": True, "champion": champion, "champion_family": families[champion],
        "selected_on": "valid", "model_key": champion, "selection": selection.get("rule"),
        "valid": selection["valid"], "test": test,
        "targets": targets,
        "targets_mase": targets_mase,
        "done_when": {"rule": "champion beats every reference (seasonal naive and the statsforecast methods) on test item WAPE and item MASE",
                      "met": bool(targets.get("met") and targets_mase.get("met"))},
        "references": references, "best_statsforecast": best_stats,
        "fit": selection["fit"],
        "horizon_days": h,
        "valid_window": selection["valid_window"],
        "gate_rows": selection.get("gate_rows"),
        "test_window": [str(series.days[o].date()), str(series.days[o + h - 1].date())],
        "n_series": {lvl: int((levels == lvl).sum()) for lvl in LEVELS},
        "test_units": {lvl: float(window.actual[levels == lvl].sum()) for lvl in LEVELS},
    }
    DEMAND_METRICS.parent.mkdir(parents=True, exist_ok=True)
    DEMAND_METRICS.write_text(json.dumps(metrics, indent=2))
    shown = [n for n in dict.fromkeys([champion, best_stats, "seasonal_naive", "moving_average"]) if n in forecasts]
    _write_forecast_plots(series, o, {n: forecasts[n] for n in shown}, champion, cfg)
    return metrics


def _or_inf(value: float | None) -> float:
    return math.inf if value is None else float(value)


def _finite(table: dict[str, dict[str, float | None]]) -> dict[str, dict[str, float]]:
    return {n: {k: v for k, v in row.items() if v is not None} for n, row in table.items()}


def _write_forecast_plots(series: DemandSeries, o: int, forecasts: dict[str, np.ndarray], name: str, cfg: DemandParams) -> None:
    """forecast.csv (test window, top categories by test units, columns by rank) and forecast.png with history."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    h = cfg.horizon_days
    cats = np.flatnonzero(np.asarray(series.levels) == "category")
    top = cats[np.argsort(-series.units[cats, o : o + h].sum(axis=1), kind="stable")[: cfg.plot_top_categories]]
    frame = pd.DataFrame({"date": series.days[o : o + h].strftime("%Y-%m-%d")})
    for rank, s in enumerate(top, start=1):
        frame[f"actual_top{rank}"] = series.units[s, o : o + h]
        for key, f in forecasts.items():
            frame[f"{'model' if key == name else key}_top{rank}"] = f[s].round(3)
    DEMAND_PLOTS.mkdir(parents=True, exist_ok=True)
    frame.to_csv(DEMAND_PLOTS / "forecast.csv", index=False)
    (DEMAND_PLOTS / "forecast_legend.json").write_text(json.dumps({f"top{r}": series.ids[s] for r, s in enumerate(top, start=1)}))

    fig, axes = plt.subplots(len(top), 1, figsize=(8, 2.4 * len(top)), squeeze=False)
    context = max(0, o - 3 * h)
    for ax, s in zip(axes[:, 0], top):
        ax.plot(series.days[context : o + h], series.units[s, context : o + h], "k-", lw=1, label="actual")
        for key, f in forecasts.items():
            ax.plot(series.days[o : o + h], f[s], lw=1.5, ls="-" if key == name else "--", label=key)
        ax.axvline(series.days[o], color="grey", ls=":", lw=1)
        ax.set(title=f"category {series.ids[s]}", ylabel="units/day")
    axes[0, 0].legend(fontsize=7, ncol=4)
    fig.tight_layout()
    fig.savefig(DEMAND_PLOTS / "forecast.png", dpi=100)
    plt.close(fig)


def register_demand(params: Params, model_dir: Path = DEMAND_DIR, events_path: Path = paths.EVENTS, task: str = "demand"):
    """Register the demand forecaster (task "demand"); the gate compares WAPE unless registry.tasks.demand says otherwise,
    with the champion forecasting this run's validation window where it was fitted on none of it."""
    from shopsight.registry import champion_scores, register_model, with_reference_tolerance

    metrics = json.loads(DEMAND_METRICS.read_text())
    gate = params.registry.tasks.get(task) or params.registry.gate.model_copy(update={"metric": "wape"})
    cfg = params.demand

    def rescore(champion_dir: Path) -> dict[str, float | None]:
        series = daily_units(events_path)
        window = window_at(series, split_origins(len(series.days), cfg)["valid"][-1], cfg.horizon_days)
        return level_metrics(window, np.asarray(load_candidate(champion_dir).predict(window), dtype="float64"), cfg.season_days)

    def labels_until(stored: dict[str, Any]) -> str | None:  # a champion fitted on the days before its validation window
        window = stored.get("valid_window")
        return f"{window[0]}T00:00:00+00:00" if window else None

    return register_model(
        task,
        model_dir,
        metrics,
        {"demand": params.demand.model_dump()},
        main_metric=gate.metric,
        model_key=metrics["model_key"],
        gate=gate,
        lineage={"family": metrics["champion_family"], "candidate": metrics["model_key"],
                 "is_reference": metrics["model_key"] in cfg.references},
        framework=metrics["champion_family"],
        score_champion=lambda: with_reference_tolerance(
            task, champion_scores(task, metrics.get("gate_rows"), rescore, gate.metric, labels_until_of=labels_until),
            metrics.get("selection"), metrics["model_key"], cfg.references),
        gate_rows=metrics.get("gate_rows"),
    )


# ---- serving: whatever family won, loaded with load_candidate, forecasting DemandWindows as in evaluation ----

from datetime import date, timedelta  # noqa: E402
from typing import Literal  # noqa: E402

from pydantic import BaseModel, ConfigDict, Field, model_validator  # noqa: E402

MAX_HISTORY_DAYS = 366


class DemandRequest(BaseModel):
    """Forecast one series: give its daily history (oldest first, ending the day before `start`), or only its id
    to forecast a series the model was trained on from the stored latest window."""

    model_config = ConfigDict(extra="forbid")
    series_id: str = Field(min_length=1, max_length=128)
    level: Literal["item", "category"] = "category"
    history: list[float] | None = Field(None, max_length=MAX_HISTORY_DAYS, description="daily units, oldest first")
    start: date | None = Field(None, description="first forecast day; default: the day after the stored data (or today)")

    @model_validator(mode="after")
    def _check_history(self) -> "DemandRequest":
        if self.history is not None and any((not np.isfinite(v)) or v < 0 for v in self.history):
            raise ValueError("history: daily units must be finite and >= 0")
        return self


class DemandForecastOut(BaseModel):
    series_id: str
    level: str
    dates: list[date]
    units: list[float]
    model: str
    history_source: Literal["request", "stored", "none"] = Field(description="where the input window came from")


class DemandScorer:
    """The champion saved by train_demand, whatever its family (`load_candidate`), and the stored recent history
    of every series. A statistical champion fits each requested series on its history at request time."""

    def __init__(self, model_dir: Path) -> None:
        model_dir = Path(model_dir)
        self.config = json.loads((model_dir / SERVING_FILE).read_text())
        self.model = load_candidate(model_dir)
        self.family = candidate_family(model_dir)
        self.h = self.config["horizon_days"]

    def forecast(self, requests: list[DemandRequest], tag: str) -> list[DemandForecastOut]:
        if not requests:
            return []
        default_start = date.fromisoformat(self.config["last_day"]) + timedelta(days=1)
        histories, starts, sources = [], [], []
        for r in requests:
            if r.history is not None:
                hist, source = list(r.history), "request"
            else:
                stored = self.config["recent"].get(r.level, {}).get(r.series_id)
                hist, source = (stored, "stored") if stored is not None else ([], "none")
            histories.append(hist)
            starts.append(r.start or default_start)
            sources.append(source)
        # a history shorter than input_days is left-padded with zero sales; longer ones are used whole, so
        # requests are forecast in groups of equal history length (no padding beyond the shop's first day)
        width = self.config["input_days"]
        padded = [[0.0] * (width - len(h)) + [float(u) for u in h] for h in histories]
        units = np.zeros((len(requests), self.h))
        lengths = np.array([len(h) for h in padded])
        for n in np.unique(lengths):
            rows = np.flatnonzero(lengths == n)
            window = DemandWindow([requests[i].series_id for i in rows], [requests[i].level for i in rows],
                                  np.array([padded[i] for i in rows]), pd.DatetimeIndex([starts[i] for i in rows]), self.h)
            units[rows] = np.clip(np.asarray(self.model.predict(window), dtype="float64"), 0.0, None)
        return [
            DemandForecastOut(series_id=r.series_id, level=r.level, dates=[s + timedelta(days=k) for k in range(self.h)],
                              units=[round(float(u), 4) for u in row], model=tag, history_source=src)
            for r, s, row, src in zip(requests, starts, units, sources)
        ]
