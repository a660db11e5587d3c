"""The synthetic shop: contract, structure, drift scenarios and calibrated ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
from pydantic import ValidationError
from scipy.stats import rankdata

from shopsight.schema import CANONICAL_COLUMNS, CANONICAL_DTYPES, EVENT_TYPES
from shopsight.simulator import EVENTS_SCHEMA, SimulatorParams, generate_shop

SMALL = dict(n_users=300, n_items=80, n_categories=6, days=35, truth_cutoffs=["2026-01-26"])
BASE = dict(n_users=1200, n_items=200, n_categories=10, days=84)


def _read(path: str | Path) -> pd.DataFrame:
    return pd.read_parquet(path)


def _auc(y: np.ndarray, score: np.ndarray) -> float:
    ranks = rankdata(score)
    n1 = int(y.sum())
    n0 = len(y) - n1
    return float((ranks[y].sum() - n1 * (n1 + 1) / 2) / (n1 * n0))


@pytest.fixture(scope="module")
def base(tmp_path_factory):
    out = tmp_path_factory.mktemp("base")
    result = generate_shop(SimulatorParams(**BASE), out, progress=False)
    return result, _read(result.events_path)


def test_params_are_strict():
    with pytest.raises(ValidationError):
        SimulatorParams(no_such_knob=1)
    with pytest.raises(ValidationError):
        SimulatorParams(start_date="05/01/2026")
    with pytest.raises(ValidationError):
        SimulatorParams(drift_scenario="meteor")
    with pytest.raises(ValidationError):
        SimulatorParams(sequential_dependence=0.9, complement_prob=0.3)


def test_same_params_give_identical_files_and_other_seed_differs(tmp_path):
    a = generate_shop(SimulatorParams(**SMALL), tmp_path / "a", progress=False)
    b = generate_shop(SimulatorParams(**SMALL), tmp_path / "b", progress=False)
    c = generate_shop(SimulatorParams(**SMALL, seed=7), tmp_path / "c", progress=False)
    assert a.n_events > 1000
    for name in ("events", "items", "truth_purchase", "truth_churn", "truth_next_item"):
        assert (tmp_path / "a" / f"{name}.parquet").read_bytes() == (tmp_path / "b" / f"{name}.parquet").read_bytes(), name
    assert (tmp_path / "a" / "events.parquet").read_bytes() != (tmp_path / "c" / "events.parquet").read_bytes()
    assert a.n_events == b.n_events and a.n_events != c.n_events


def test_events_follow_the_canonical_contract(base):
    result, ev = base
    assert pq.read_schema(result.events_path).remove_metadata() == EVENTS_SCHEMA
    assert tuple(ev.columns) == CANONICAL_COLUMNS
    typed = ev.astype(CANONICAL_DTYPES)  # the canonical pandas dtypes apply without loss
    assert typed["timestamp"].dt.tz is not None
    assert set(ev.event_type.unique()) == set(EVENT_TYPES)
    assert ev.notna().all().all()
    assert (ev.price >= 0).all() and (ev.quantity >= 1).all()
    assert ev.user_id.str.fullmatch(r"u\d{6,}").all() and ev.item_id.str.fullmatch(r"i\d{5,}").all()
    assert ev.category.str.fullmatch(r"c\d{2,}").all()
    start = pd.Timestamp("2026-01-05", tz="UTC")
    assert ev.timestamp.min() >= start and ev.timestamp.max() < start + pd.Timedelta(days=BASE["days"])
    items = _read(result.items_path)
    assert len(items) == BASE["n_items"] == result.n_items
    # an item's category is fixed and matches the catalogue
    merged = ev[["item_id", "category"]].drop_duplicates().merge(items, on="item_id", suffixes=("", "_cat"))
    assert (merged.category == merged.category_cat).all()
    assert result.n_users == ev.user_id.nunique() and result.n_events == len(ev)
    summary = json.loads(Path(result.summary_path).read_text())
    assert summary["n_events"] == len(ev) and summary["params"]["n_users"] == BASE["n_users"]


def test_funnel_order_and_sessions(base):
    _, ev = base
    ev = ev.sort_values(["timestamp"], kind="stable")
    first = ev.groupby("session_id").event_type.first()
    assert (first == "view").all()
    # every purchase has an earlier cart of the same item in the same session
    carts = ev[ev.event_type == "cart"].groupby(["session_id", "item_id"]).timestamp.min()
    buys = ev[ev.event_type == "purchase"].set_index(["session_id", "item_id"]).timestamp
    cart_t = carts.reindex(buys.index)
    assert len(buys) > 500
    assert (cart_t.notna() & (cart_t < buys)).mean() > 0.99
    # removes follow a cart of the item
    rem = ev[ev.event_type == "remove_from_cart"].set_index(["session_id", "item_id"]).timestamp
    assert (carts.reindex(rem.index) < rem).mean() > 0.99
    # a session belongs to one user and one day; a user's sessions are >= 30 minutes apart
    span = ev.groupby("session_id").agg(user=("user_id", "nunique"), t0=("timestamp", "min"), t1=("timestamp", "max"))
    assert (span.user == 1).all()
    assert (span.t0.dt.floor("D") == span.t1.dt.floor("D")).all()
    s = ev.groupby("session_id").agg(user=("user_id", "first"), t0=("timestamp", "min"), t1=("timestamp", "max"))
    s = s.sort_values(["user", "t0"])
    gap = s.t0.shift(-1) - s.t1
    same_user = s.user.shift(-1) == s.user
    same_day = same_user & (s.t0.shift(-1).dt.floor("D") == s.t1.dt.floor("D"))
    assert (gap[same_day] >= pd.Timedelta(minutes=30)).all()
    assert (gap[same_user] >= pd.Timedelta(minutes=30)).mean() > 0.995  # across midnight: rare near misses
    # funnel shape: views >> carts >> purchases, some abandonment, removes and favourites
    counts = ev.event_type.value_counts()
    assert counts["view"] > 3 * counts["cart"] > 3 * counts["purchase"] > 0
    assert counts["remove_from_cart"] > 0 and counts["favorite"] > 0


def test_popularity_is_zipf_like(base, tmp_path):
    _, ev = base
    views = ev[ev.event_type == "view"].item_id.value_counts()
    top = views.iloc[: max(1, BASE["n_items"] // 10)].sum() / views.sum()
    flat = generate_shop(SimulatorParams(**SMALL, zipf_exponent=0.0, affinity_scale=0.0), tmp_path, progress=False)
    fv = _read(flat.events_path).query("event_type == 'view'").item_id.value_counts()
    flat_top = fv.iloc[: max(1, SMALL["n_items"] // 10)].sum() / fv.sum()
    assert top > 0.4
    assert top > flat_top + 0.15


def test_weekly_and_daily_cycles(base, tmp_path):
    _, ev = base
    per_dow = ev.groupby(ev.timestamp.dt.dayofweek).size()
    assert per_dow.max() / per_dow.min() > 1.3
    assert per_dow.idxmax() in (5, 6, 0)  # peak around Sunday
    per_hour = ev.groupby(ev.timestamp.dt.hour).size()
    assert per_hour.loc[19:21].mean() > 4 * per_hour.loc[2:4].mean()
    flat = generate_shop(
        SimulatorParams(**{**BASE, "n_users": 600, "days": 56}, weekly_cycle=False, daily_cycle=False), tmp_path, progress=False
    )
    fe = _read(flat.events_path)
    flat_dow = fe.groupby(fe.timestamp.dt.dayofweek).size()
    assert flat_dow.max() / flat_dow.min() < 1.2
    flat_hour = fe.groupby(fe.timestamp.dt.hour).size()
    assert flat_hour.loc[19:21].mean() < 1.5 * flat_hour.loc[2:4].mean()


def test_sequential_dependence_and_repeat_purchases(base, tmp_path):
    _, ev = base

    def same_category_rate(frame):
        v = frame[frame.event_type == "view"].sort_values(["session_id", "timestamp"])
        same_sess = v.session_id.eq(v.session_id.shift())
        return (v.category.eq(v.category.shift()) & same_sess).sum() / same_sess.sum()

    def repeat_share(frame):
        b = frame[frame.event_type == "purchase"]
        return b.duplicated(["user_id", "item_id"]).mean()

    small = {**BASE, "n_users": 600, "days": 56}
    off = generate_shop(
        SimulatorParams(**small, sequential_dependence=0.0, complement_prob=0.0, repeat_purchase=0.0), tmp_path / "off", progress=False
    )
    loyal = generate_shop(SimulatorParams(**small, repeat_purchase=0.7), tmp_path / "loyal", progress=False)
    oe = _read(off.events_path)
    assert same_category_rate(ev) > same_category_rate(oe) + 0.2
    assert repeat_share(_read(loyal.events_path)) > repeat_share(oe) + 0.1


def test_promotions_raise_conversion(base):
    result, ev = base
    summary = json.loads(Path(result.summary_path).read_text())
    assert summary["promotions"]
    day = (ev.timestamp - pd.Timestamp("2026-01-05", tz="UTC")).dt.days
    cat = ev.category.str[1:].astype(int)
    on = np.zeros(len(ev), dtype=bool)
    for promo in summary["promotions"]:
        on |= (cat == promo["category"]).values & (day >= promo["start_day"]).values & (day < promo["start_day"] + promo["days"]).values
    conv = lambda m: (ev.event_type[m] == "purchase").sum() / (ev.event_type[m] == "view").sum()  # noqa: E731
    assert conv(on) > 1.2 * conv(~on)


def _window_stats(ev: pd.DataFrame, drift_start: str, days: int) -> dict[str, dict]:
    ds = pd.Timestamp(drift_start, tz="UTC")
    pre = ev[(ev.timestamp >= ds - pd.Timedelta(days=21)) & (ev.timestamp < ds)]
    post = ev[(ev.timestamp >= ds + pd.Timedelta(days=7)) & (ev.timestamp < ds + pd.Timedelta(days=21))]
    out = {}
    for name, x, n_days in (("pre", pre, 21), ("post", post, 14)):
        v = x[x.event_type == "view"]
        out[name] = {
            "events_per_day": len(x) / n_days,
            "conversion": (x.event_type == "purchase").sum() / len(v),
            "purchases_per_day": (x.event_type == "purchase").sum() / n_days,
            "price": v.price.mean(),
            "mix": v.category.value_counts(normalize=True),
            "frame": x,
        }
    return out


@pytest.fixture(scope="module")
def drift_runs(tmp_path_factory):
    runs = {}
    for scenario in ("none", "new_traffic_source", "price_increase", "category_shift", "seasonal_peak"):
        params = SimulatorParams(
            n_users=1000, n_items=150, n_categories=10, days=70, drift_scenario=scenario, drift_start="2026-02-23",
            truth_cutoffs=["2026-02-23"],
        )
        result = generate_shop(params, tmp_path_factory.mktemp(scenario), progress=False)
        runs[scenario] = (result, _window_stats(_read(result.events_path), result.drift_start, params.days))
    return runs


def _ratio(stats, key):
    return stats["post"][key] / stats["pre"][key]


def _mix_shift(stats):
    return 0.5 * stats["pre"]["mix"].sub(stats["post"]["mix"], fill_value=0).abs().sum()


def test_drift_none_shows_no_shift(drift_runs):
    result, stats = drift_runs["none"]
    assert result.drift_start == "2026-02-23"
    for key in ("events_per_day", "conversion", "price", "purchases_per_day"):
        assert 0.8 < _ratio(stats, key) < 1.25, key
    assert _mix_shift(stats) < 0.08


def test_drift_new_traffic_source(drift_runs):
    _, none = drift_runs["none"]
    _, stats = drift_runs["new_traffic_source"]
    assert _ratio(stats, "events_per_day") > 1.5 * _ratio(none, "events_per_day")
    assert _ratio(stats, "conversion") < 0.75 * _ratio(none, "conversion")


def test_drift_price_increase(drift_runs):
    result, stats = drift_runs["price_increase"]
    _, none = drift_runs["none"]
    cat = f"c{json.loads(Path(result.summary_path).read_text())['drift']['category']:02d}"

    def cat_stats(s, when):
        x = s[when]["frame"]
        x = x[x.category == cat]
        v = x[x.event_type == "view"]
        return v.price.mean(), (x.event_type == "purchase").sum() / len(v)

    (p0, c0), (p1, c1) = cat_stats(stats, "pre"), cat_stats(stats, "post")
    (n0, _), (n1, _) = cat_stats(none, "pre"), cat_stats(none, "post")
    assert p1 / p0 > 1.25 and abs(n1 / n0 - 1) < 0.1
    assert c1 < 0.85 * c0
    assert _ratio(stats, "price") > _ratio(none, "price") + 0.02


def test_drift_category_shift(drift_runs):
    result, stats = drift_runs["category_shift"]
    _, none = drift_runs["none"]
    assert _mix_shift(stats) > 2 * _mix_shift(none) and _mix_shift(stats) > 0.1
    cats = [f"c{c:02d}" for c in json.loads(Path(result.summary_path).read_text())["drift"]["categories"]]
    assert stats["post"]["mix"].reindex(cats).sum() > 1.3 * stats["pre"]["mix"].reindex(cats).fillna(0).sum()


def test_drift_seasonal_peak(drift_runs):
    _, none = drift_runs["none"]
    _, stats = drift_runs["seasonal_peak"]
    assert _ratio(stats, "events_per_day") > _ratio(none, "events_per_day") + 0.3
    assert _ratio(stats, "purchases_per_day") > _ratio(none, "purchases_per_day") + 0.5


def test_ground_truth_is_calibrated(base):
    result, ev = base
    tp, tc, tn = _read(result.truth_purchase_path), _read(result.truth_churn_path), _read(result.truth_next_item_path)
    params = SimulatorParams(**BASE)
    end = pd.Timestamp("2026-01-05", tz="UTC") + pd.Timedelta(days=BASE["days"])
    assert sorted(tp.cutoff.dt.strftime("%Y-%m-%d").unique()) == result.cutoffs
    assert len(result.cutoffs) >= 3
    checked_churn = 0
    for cutoff in tp.cutoff.unique():
        before = ev[ev.timestamp < cutoff]
        t = tp[tp.cutoff == cutoff]
        # population: exactly the users with an event before the cutoff
        assert set(t.user_id) == set(before.user_id)
        assert t.p_purchase.between(0, 1).all() and (t.p_purchase[~t.alive] == 0).all()
        window = ev[(ev.timestamp >= cutoff) & (ev.timestamp < cutoff + pd.Timedelta(days=params.horizon_days))]
        bought = t.user_id.isin(set(window.user_id[window.event_type == "purchase"])).to_numpy()
        assert abs(t.p_purchase.mean() - bought.mean()) < 0.03
        assert _auc(bought, t.p_purchase.to_numpy()) > 0.8
        alive = t.alive.to_numpy()
        assert _auc(bought[alive], t.p_purchase.to_numpy()[alive]) > 0.65  # informative beyond alive/dead
        if cutoff + pd.Timedelta(days=params.churn_horizon_days) <= end:
            c = tc[tc.cutoff == cutoff]
            cw = ev[(ev.timestamp >= cutoff) & (ev.timestamp < cutoff + pd.Timedelta(days=params.churn_horizon_days))]
            churned = ~c.user_id.isin(set(cw.user_id)).to_numpy()
            assert abs(c.p_churn.mean() - churned.mean()) < 0.03
            assert _auc(churned, c.p_churn.to_numpy()) > 0.8
            checked_churn += 1
        # next item: the realised next view falls in the truth's top-k at the rate its cumulative prob says
        n = tn[tn.cutoff == cutoff]
        assert (n.groupby("user_id")["rank"].max() == params.truth_top_k).all()
        assert (n.groupby("user_id").prob.diff().dropna() <= 1e-12).all()
        nxt = ev[ev.timestamp >= cutoff].sort_values("timestamp", kind="stable").groupby("user_id").first()
        assert (nxt.event_type == "view").all()
        users = pd.Index(n.user_id.unique()).intersection(nxt.index)
        assert len(users) > 300
        realised = pd.DataFrame({"user_id": users, "item_id": nxt.loc[users, "item_id"].to_numpy()})
        hit = n.merge(realised, on=["user_id", "item_id"])
        hit_rate = len(hit) / len(users)
        expected = n[n.user_id.isin(users)].groupby("user_id").prob.sum().mean()
        assert abs(hit_rate - expected) < 0.06, (hit_rate, expected)
        assert hit.prob.mean() > n[n["rank"] == params.truth_top_k].prob.mean()
    assert checked_churn >= 1


def test_chunked_run_is_valid_and_consistent(tmp_path):
    one = generate_shop(SimulatorParams(**SMALL), tmp_path / "one", progress=False)
    many = generate_shop(SimulatorParams(**SMALL, chunk_users=97), tmp_path / "many", progress=False)
    a, b = _read(one.events_path), _read(many.events_path)
    assert pq.ParquetFile(many.events_path).metadata.num_row_groups > 1
    assert tuple(b.columns) == CANONICAL_COLUMNS and b.session_id.is_unique is False
    # same population of simulated users and the same catalogue; statistics agree
    assert json.loads(Path(one.summary_path).read_text())["n_users_simulated"] == json.loads(
        Path(many.summary_path).read_text()
    )["n_users_simulated"]
    assert _read(one.items_path).equals(_read(many.items_path))
    assert abs(len(b) / len(a) - 1) < 0.2
    assert b.groupby("session_id").user_id.nunique().max() == 1  # session ids unique across chunks
    tp = _read(many.truth_purchase_path)
    assert tp.user_id.is_unique and set(tp.user_id) == set(b[b.timestamp < tp.cutoff.iloc[0]].user_id)
