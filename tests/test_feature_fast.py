"""The in-memory feature path (shopsight/feature_fast.py) equals the DuckDB one (shopsight/feature_sql.py)."""

import numpy as np
import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from shopsight.feature_fast import compute_user_features_fast
from shopsight.feature_sql import compute_user_features, feature_columns
from shopsight.schema import EVENT_TYPES

DAY_NS = 86_400 * 10**9
BASE = pd.Timestamp("2026-03-01", tz="UTC")
WINDOWS = [[7, 28, 84], [1, 3], [2], [28, 7]]


def _sql_reference(events: pd.DataFrame, cutoffs: dict, windows: list[int]) -> pd.DataFrame:
    """What the service did before: one DuckDB query per distinct cutoff over the users that share it."""
    by_cutoff: dict = {}
    for user, cutoff in cutoffs.items():
        by_cutoff.setdefault(cutoff, []).append(user)
    parts = [compute_user_features(events[events["user_id"].isin(users)], [cutoff], windows) for cutoff, users in by_cutoff.items()]
    return pd.concat(parts, ignore_index=True)


def _assert_same(fast: pd.DataFrame, sql: pd.DataFrame, windows: list[int]) -> None:
    assert sorted(fast["user_id"]) == sorted(sql["user_id"])
    fast, sql = fast.set_index("user_id").sort_index(), sql.set_index("user_id").sort_index()
    assert (fast["cutoff"] == sql["cutoff"]).all()
    for col in feature_columns(windows):
        assert fast[col].dtype == np.float64, col
        np.testing.assert_allclose(fast[col].to_numpy(), sql[col].to_numpy(), rtol=1e-9, atol=0, err_msg=col)


@st.composite
def event_frames(draw):
    """Several users, each with a cutoff (not at midnight, some shared) and events around its windows' edges."""
    windows = draw(st.sampled_from(WINDOWS))
    lookback = max(windows)
    n_users = draw(st.integers(1, 5))
    cutoff_pool = [BASE + pd.Timedelta(microseconds=draw(st.integers(0, 5 * DAY_NS // 1000))) for _ in range(draw(st.integers(1, 3)))]
    cutoffs = {f"u{k}": draw(st.sampled_from(cutoff_pool)) for k in range(n_users)}
    edges = [0, -1, 1, -1000, 1000]
    rows = []
    # "x" has events but no cutoff: it must be ignored, as the service's per-cutoff subsets ignore it
    for user in [*cutoffs, "x"]:
        cut_ns = cutoffs.get(user, BASE).value
        for _ in range(draw(st.integers(0, 12))):
            kind = draw(st.sampled_from(["edge", "cutoff", "random"]))
            if kind == "edge":  # at (or a nanosecond/microsecond around) a window start or the look-back start
                ts = cut_ns - draw(st.sampled_from([*windows, lookback])) * DAY_NS + draw(st.sampled_from(edges))
            elif kind == "cutoff":
                ts = cut_ns + draw(st.sampled_from(edges))
            else:
                ts = cut_ns + draw(st.integers(-(lookback + 2) * DAY_NS, 2 * DAY_NS))
            rows.append(
                {
                    "user_id": user,
                    "item_id": draw(st.sampled_from(["i1", "i2", "i3", "i4"])),
                    "event_type": draw(st.sampled_from(list(EVENT_TYPES))),
                    "timestamp": pd.Timestamp(ts, tz="UTC"),
                    "session_id": draw(st.sampled_from([None, "", "s1", "s2", "s3"])),
                    "category": draw(st.sampled_from([None, "c1", "c2", "c3"])),
                    "price": draw(st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False), st.sampled_from([0.0, 9.99]))),
                    "quantity": draw(st.integers(1, 3)),
                }
            )
    frame = pd.DataFrame(rows, columns=["user_id", "item_id", "event_type", "timestamp", "session_id", "category", "price", "quantity"])
    frame["event_type"] = pd.Categorical(frame["event_type"], categories=list(EVENT_TYPES))
    for col in ("user_id", "item_id", "session_id", "category"):
        frame[col] = frame[col].astype("string")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True).astype("datetime64[ns, UTC]")
    frame["price"] = frame["price"].astype("float64")
    frame["quantity"] = frame["quantity"].astype("int64")
    return frame, cutoffs, windows


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(event_frames())
def test_fast_features_equal_duckdb_features(case):
    events, cutoffs, windows = case
    _assert_same(compute_user_features_fast(events, cutoffs, windows), _sql_reference(events, cutoffs, windows), windows)


def test_simulated_shop_matches_on_every_user(tmp_path):
    """A realistic frame (the simulator's funnels, sessions and prices), one cutoff mid-day for all users."""
    from tests.conftest import make_events

    rng = np.random.default_rng(3)
    n = 3000
    rows = [
        (f"u{rng.integers(40)}", f"i{rng.integers(60)}", str(rng.choice(EVENT_TYPES)),
         str(BASE - pd.Timedelta(seconds=int(rng.integers(0, 90 * 86400)))), float(rng.integers(1, 500)), f"c{rng.integers(6)}")
        for _ in range(n)
    ]
    events = make_events(rows)
    cutoff = BASE - pd.Timedelta(hours=7, microseconds=5)
    cutoffs = {u: cutoff for u in events["user_id"].unique()}
    fast = compute_user_features_fast(events, cutoffs, [7, 28, 84])
    sql = compute_user_features(events, [cutoff], [7, 28, 84])
    assert len(fast) > 30
    _assert_same(fast, sql, [7, 28, 84])
    assert list(fast["user_id"]) == list(sql["user_id"])  # same order: by cutoff, then user id


def test_user_without_events_before_the_cutoff_is_absent():
    from tests.conftest import make_events

    events = make_events([("a", "i1", "view", "2026-03-02 00:00"), ("b", "i1", "view", "2026-02-25 00:00"), ("c", "i1", "view", "2026-02-20 00:00")])
    fast = compute_user_features_fast(events, {"a": BASE, "b": BASE, "c": BASE}, [7])
    assert list(fast["user_id"]) == ["b"]


def test_duplicate_users_in_cutoffs_are_refused():
    from tests.conftest import make_events

    events = make_events([("a", "i1", "view", "2026-02-20 00:00")])
    with pytest.raises(ValueError, match="one cutoff per user"):
        compute_user_features_fast(events, pd.Series([BASE, BASE], index=["a", "a"]), [7])


# ---- the service's request path (shopsight/serving.py) against the batch path on the same histories ----


@st.composite
def request_histories(draw):
    """Histories as the service receives them: per-user as_of (some shared, some omitted), given and missing
    session ids (including one spelled like a derived id), events on window edges and after the as_of."""
    from shopsight.serving import EventIn, UserHistory

    windows = draw(st.sampled_from(WINDOWS))
    pool = [BASE + pd.Timedelta(microseconds=draw(st.integers(0, 3 * DAY_NS // 1000))) for _ in range(2)]
    users = []
    for k in range(draw(st.integers(1, 5))):
        as_of = draw(st.sampled_from([*pool, None]))
        anchor = (as_of or NOW).value
        events = []
        for _ in range(draw(st.integers(0, 10))):
            offset = draw(st.one_of(
                st.sampled_from([0, -1000, 1000, -30 * 60 * 10**9, -30 * 60 * 10**9 - 1000, *(-w * DAY_NS for w in windows)]),
                st.integers(-(max(windows) + 1) * DAY_NS // 1000, DAY_NS // 1000).map(lambda us: us * 1000),
            ))
            events.append(EventIn(
                item_id=draw(st.sampled_from(["i1", "i2", "i3"])),
                event_type=draw(st.sampled_from(list(EVENT_TYPES))),
                timestamp=pd.Timestamp(anchor + offset, tz="UTC").to_pydatetime(),
                price=draw(st.one_of(st.none(), st.floats(0, 1e4, allow_nan=False))),
                category=draw(st.sampled_from([None, "c1", "c2"])),
                session_id=draw(st.sampled_from([None, None, None, "", "s1", f"{k}-s1"])),
                quantity=draw(st.integers(1, 3)),
            ))
        users.append(UserHistory(user_id=f"user{k % 3}", events=events, as_of=None if as_of is None else as_of.to_pydatetime()))
    return users, windows


NOW = BASE + pd.Timedelta(days=1, hours=5, microseconds=17)


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(request_histories())
def test_request_path_equals_batch_features_of_the_same_histories(case):
    from shopsight.config import FeatureParams
    from shopsight.features import model_input
    from shopsight.serving import features_for_histories, histories_to_events

    users, windows = case
    params = FeatureParams(windows_days=windows)
    x, active, as_ofs = features_for_histories(users, params, now=NOW.to_pydatetime())
    # the batch path: canonical events (user = position of the history), one DuckDB query per as_of
    events = histories_to_events(users)
    for i, as_of in enumerate(as_ofs):
        batch = compute_user_features(events[events["user_id"] == str(i)], [as_of], windows)
        assert active[i] == (len(batch) == 1)
        if active[i]:
            np.testing.assert_allclose(x[i], model_input(batch, feature_columns(windows))[0], rtol=1e-6)


# ---- full-history columns (shopsight/lifetime.py) on purchase logs with returns and repeat purchases ----


@pytest.mark.parametrize("seed, history_days, timezone", [(2, None, "Asia/Shanghai"), (3, 45, "UTC"), (4, 10, "America/Bogota")])
def test_fast_lifetime_columns_equal_duckdb_on_logs_with_returns(seed, history_days, timezone):
    from shopsight.config import FeatureParams
    from tests.test_lifetime import T0, random_purchase_log

    events = random_purchase_log(seed, n=1500, n_users=30, days=150)
    offset = FeatureParams(timezone=timezone).utc_offset_ns
    rng = np.random.default_rng(seed)
    pool = [T0 + pd.Timedelta(days=d) - pd.Timedelta(offset, unit="ns") for d in (60, 100)] + [T0 + pd.Timedelta(days=130, hours=9, microseconds=3)]
    cutoffs = {u: pool[rng.integers(len(pool))] for u in events["user_id"].unique()}
    windows = [7, 28]
    by_cutoff: dict = {}
    for user, cutoff in cutoffs.items():
        by_cutoff.setdefault(cutoff, []).append(user)
    sql = pd.concat([compute_user_features(events[events["user_id"].isin(users)], [c], windows, history_days=history_days, utc_offset_ns=offset)
                     for c, users in by_cutoff.items()], ignore_index=True)
    fast = compute_user_features_fast(events, cutoffs, windows, history_days=history_days, utc_offset_ns=offset)
    assert (fast["return_rate"] > 0).sum() >= 3 and (fast["repeat_purchase_days"] > 0).sum() >= 3 and (fast["ipt_std_days"] > 0).any()
    fast, sql = fast.set_index("user_id").sort_index(), sql.set_index("user_id").sort_index()
    assert list(fast.index) == list(sql.index) and (fast["cutoff"] == sql["cutoff"]).all()
    np.testing.assert_allclose(fast[feature_columns(windows)].to_numpy(), sql[feature_columns(windows)].to_numpy(), rtol=1e-9, atol=1e-9)


def test_model_input_is_the_same_for_sums_that_differ_only_in_the_order_of_addition():
    """DuckDB's parallel sums add in no fixed order: a net monetary value came out as 2.8e-14 in one run and 0.0 in
    the next (Online Retail II), and a revenue as 1125.44 or 1125.4399999999998. The model input rounds first, so
    the same events make the same input (and LightGBM the same trees)."""
    from shopsight.features import model_input

    columns = ["monetary_total", "revenue_7d"]
    one = pd.DataFrame({"monetary_total": [2.842170943040401e-14, 774.62], "revenue_7d": [1125.44, 3275.6]})
    other = pd.DataFrame({"monetary_total": [0.0, 774.6200000000001], "revenue_7d": [1125.4399999999998, 3275.5999999999995]})
    assert np.array_equal(model_input(one, columns), model_input(other, columns))
    assert model_input(one, columns)[0, 0] == 0.0 and model_input(one, columns)[1, 1] == np.float32(np.log1p(3275.6))
