"""Demand forecast: daily units sold per item and per category for the next `demand.horizon_days`.

Series are daily sums of purchased quantity (UTC days), zeros where nothing sold, up to the last UTC day the
data covers whole (a partly observed last day would read as low sales). Split by time on the day axis: the test
window is the last `horizon` days, the validation window the `horizon` days before it, and training windows are
every sliding window whose targets end before the validation window. One global model
(models/forecast.py) forecasts all item and category series; baselines are seasonal-naive (repeat the last
`season_days`) and a moving average. Metrics over the test window: WAPE (sum |error| / sum actual) and MASE
(mean |error| over the in-sample mean |y_t - y_{t-season}|, averaged over series with a non-zero scale).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from shopsight import paths
from shopsight.config import DemandParams, Params
from shopsight.feature_sql import connection

DEMAND_DIR = paths.ARTIFACTS_DIR / "demand"
DEMAND_METRICS = paths.METRICS_DIR / "demand.json"
DEMAND_PLOTS = paths.PLOTS_DIR / "demand"
LEVELS = ("item", "category")
DEMAND_KEYS = ["wape", "mase", "wape_category", "mase_category"]


@dataclass
class DemandSeries:
    """Daily units: `units[s, d]` for series `ids[s]` of `levels[s]` on day `days[d]` (consecutive UTC dates)."""

    ids: list[str]
    levels: list[str]
    days: pd.DatetimeIndex
    units: np.ndarray


def daily_units(events: str | Path | pd.DataFrame) -> DemandSeries:
    """Item and category daily unit series from canonical events (purchases only; quantity summed).

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
            f"""SELECT CAST(date_trunc('day', timestamp) AS DATE) AS day, item_id, coalesce(category, '(none)') AS category,
                       sum(coalesce(quantity, 1))::DOUBLE AS units
                FROM {source} WHERE event_type = 'purchase' GROUP BY ALL"""
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


def train_demand(params: Params, events_path: Path = paths.EVENTS, out_dir: Path = DEMAND_DIR) -> dict:
    """Fit the forecaster on the training windows (early stopping on the validation window); write the model and
    what serving needs (config, the latest input window of every series) as .keras + JSON."""
    import keras

    from models.forecast import build_forecaster

    cfg, mcfg = params.demand, params.demand.model
    series = daily_units(events_path)
    origins = split_origins(len(series.days), cfg)
    before_valid = series.units[:, : origins["valid"][0]].sum(axis=1)
    levels = np.asarray(series.levels)
    train_rows = np.flatnonzero((levels == "category") | (before_valid >= cfg.min_train_units))
    x_train, s_train, y_train_raw = _windows(series, origins["train"], train_rows, cfg)
    x_valid, s_valid, y_valid_raw = _windows(series, origins["valid"], train_rows, cfg)
    y_train, y_valid = y_train_raw / s_train[:, None], y_valid_raw / s_valid[:, None]

    keras.utils.set_random_seed(mcfg.seed)
    model = build_forecaster(
        cfg.input_days, x_train["window"].shape[2], x_train["context"].shape[1], cfg.horizon_days, mcfg.architecture,
        mcfg.filters, mcfg.kernel_size, mcfg.hidden_units, mcfg.dropout, mcfg.learning_rate, mcfg.loss, mcfg.residual,
    )
    stop = keras.callbacks.EarlyStopping(monitor="val_loss", patience=mcfg.patience, restore_best_weights=True)
    history = model.fit(x_train, y_train, validation_data=(x_valid, y_valid), epochs=mcfg.epochs, batch_size=mcfg.batch_size,
                        callbacks=[stop], verbose=2)
    out_dir.mkdir(parents=True, exist_ok=True)
    model.save(out_dir / "model.keras")
    last = len(series.days)
    config = {
        "task": "demand",
        "architecture": mcfg.architecture,
        "input_days": cfg.input_days,
        "horizon_days": cfg.horizon_days,
        "season_days": cfg.season_days,
        "last_day": str(series.days[-1].date()),
        # the latest window of every series, so the service can forecast a known series from its id alone
        "recent": {lvl: {sid: series.units[i, last - cfg.input_days :].round(4).tolist() for i, sid in enumerate(series.ids) if series.levels[i] == lvl} for lvl in LEVELS},
    }
    (out_dir / "demand_config.json").write_text(json.dumps(config))
    hist = pd.DataFrame(history.history)
    hist.insert(0, "epoch", range(1, len(hist) + 1))
    DEMAND_PLOTS.mkdir(parents=True, exist_ok=True)
    hist.to_csv(DEMAND_PLOTS / "history.csv", index=False)
    return {"epochs": len(hist), "train_windows": int(len(y_train)), "series_trained": int(len(train_rows)), "days": len(series.days)}


def predict_units(model, history: np.ndarray, first_target_days, is_category: np.ndarray, horizon: int) -> np.ndarray:
    """Forecast units [n, horizon] from raw unit windows with a loaded forecaster."""
    inputs, scale = window_inputs(history, first_target_days, is_category, horizon)
    return np.asarray(model.predict(inputs, batch_size=4096, verbose=0)) * scale[:, None]


def evaluate_demand(params: Params, events_path: Path = paths.EVENTS, model_dir: Path = DEMAND_DIR) -> dict:
    """WAPE and MASE over the test window for the model, seasonal-naive and moving average, per level;
    metrics/demand.json, plots/demand/forecast.csv (DVC plot) and forecast.png."""
    import keras

    cfg = params.demand
    h, w, m = cfg.horizon_days, cfg.input_days, cfg.season_days
    series = daily_units(events_path)
    o = split_origins(len(series.days), cfg)["test"][0]
    levels = np.asarray(series.levels)
    model = keras.models.load_model(model_dir / "model.keras")
    name = json.loads((model_dir / "demand_config.json").read_text())["architecture"]
    history, actual = series.units[:, :o], series.units[:, o : o + h]
    forecasts = {
        name: predict_units(model, history[:, -w:], [series.days[o]] * len(levels), levels == "category", h),
        "seasonal_naive": seasonal_naive(history, h, m),
        "moving_average": moving_average(history, h, cfg.moving_average_days),
    }
    test: dict[str, dict] = {}
    for key, f in forecasts.items():
        row: dict[str, float] = {}
        for lvl in LEVELS:
            sel = levels == lvl
            suffix = "" if lvl == "item" else f"_{lvl}"
            row[f"wape{suffix}"] = wape(actual[sel], f[sel])
            row[f"mase{suffix}"] = mase(actual[sel], f[sel], history[sel], m)
        test[key] = row
    metrics = {
        "test": test,
        "model_key": name,
        "main_metric": "wape",
        "horizon_days": h,
        "test_window": [str(series.days[o].date()), str(series.days[o + h - 1].date())],
        "n_series": {lvl: int((levels == lvl).sum()) for lvl in LEVELS},
        "test_units": {lvl: float(actual[levels == lvl].sum()) for lvl in LEVELS},
        "targets": {
            "wape_below_seasonal_naive": bool(test[name]["wape"] < test["seasonal_naive"]["wape"]),
            "wape_category_below_seasonal_naive": bool(test[name]["wape_category"] < test["seasonal_naive"]["wape_category"]),
        },
    }
    DEMAND_METRICS.parent.mkdir(parents=True, exist_ok=True)
    DEMAND_METRICS.write_text(json.dumps(metrics, indent=2))
    _write_forecast_plots(series, o, forecasts, name, cfg)
    return metrics


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


def register_demand(params: Params, model_dir: Path = DEMAND_DIR):
    """Register the demand forecaster (task "demand"); the gate compares WAPE unless registry.tasks.demand says otherwise."""
    from shopsight.registry import register_model

    metrics = json.loads(DEMAND_METRICS.read_text())
    gate = params.registry.tasks.get("demand") or params.registry.gate.model_copy(update={"metric": "wape"})
    return register_model(
        "demand",
        model_dir,
        metrics,
        {"demand": params.demand.model_dump()},
        main_metric=gate.metric,
        model_key=metrics["model_key"],
        gate=gate,
    )


# ---- serving: the same window inputs (window_inputs) and the stored model ----

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
    """The stored forecaster with a compiled forward pass."""

    def __init__(self, model_dir: Path) -> None:
        import keras
        import tensorflow as tf

        self.config = json.loads((Path(model_dir) / "demand_config.json").read_text())
        self.w, self.h = self.config["input_days"], self.config["horizon_days"]
        model = keras.models.load_model(Path(model_dir) / "model.keras")
        n_ctx = self.h * 7 + 2
        specs = {"window": tf.TensorSpec([None, self.w, 8], tf.float32), "context": tf.TensorSpec([None, n_ctx], tf.float32),
                 "baseline": tf.TensorSpec([None, 1], tf.float32)}
        self._forward = tf.function(lambda inputs: model(inputs, training=False), input_signature=[specs])
        self._forward({name: np.zeros([1, *spec.shape[1:]], "float32") for name, spec in specs.items()})

    def forecast(self, requests: list[DemandRequest], tag: str) -> list[DemandForecastOut]:
        if not requests:
            return []
        default_start = date.fromisoformat(self.config["last_day"]) + timedelta(days=1)
        windows, starts, sources = [], [], []
        for r in requests:
            if r.history is not None:
                hist, source = list(r.history), "request"
            else:
                stored = self.config["recent"].get(r.level, {}).get(r.series_id)
                hist, source = (stored, "stored") if stored is not None else ([], "none")
            hist = ([0.0] * self.w + hist)[-self.w :]  # left-pad a short history with zero sales
            windows.append(hist)
            starts.append(r.start or default_start)
            sources.append(source)
        inputs, scale = window_inputs(np.asarray(windows), pd.DatetimeIndex(starts), np.array([r.level == "category" for r in requests]), self.h)
        units = self._forward(inputs).numpy() * scale[:, None]
        return [
            DemandForecastOut(series_id=r.series_id, level=r.level, dates=[s + timedelta(days=k) for k in range(self.h)],
                              units=[round(float(u), 4) for u in row], model=tag, history_source=src)
            for r, s, row, src in zip(requests, starts, units, sources)
        ]
