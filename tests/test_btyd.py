from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.special import hyp2f1
from sklearn.metrics import roc_auc_score

from shopsight.btyd import (
    BGNBDParams,
    ParetoNBDParams,
    bgnbd_log_likelihood,
    expected_purchases,
    fit_bgnbd,
    fit_paretonbd,
    p_alive,
    p_no_purchase_within,
    paretonbd_log_likelihood,
    paretonbd_p_alive,
    paretonbd_p_no_purchase_within,
    rfm_summary,
)

# CDNOW calibration summary (frequency, recency, T in weeks for 2,357 customers), copied unchanged from
# lifetimes/datasets/cdnow_customers_summary.csv in the Lifetimes 0.11.3 wheel on PyPI
# (Copyright (c) 2015 Cameron Davidson-Pilon, MIT licence). It is the data set of Fader, Hardie & Lee (2005).
CDNOW = Path(__file__).parent / "fixtures" / "cdnow_summary.csv"
PUBLISHED = BGNBDParams(r=0.243, alpha=4.414, a=0.793, b=2.426)  # FHL (2005), section 4


@pytest.fixture(scope="module")
def cdnow() -> pd.DataFrame:
    return pd.read_csv(CDNOW)


@pytest.fixture(scope="module")
def cdnow_fit(cdnow) -> BGNBDParams:
    return fit_bgnbd(cdnow["frequency"], cdnow["recency"], cdnow["T"])


def test_cdnow_fit_reproduces_published_estimates(cdnow, cdnow_fit):
    assert len(cdnow) == 2357
    for name in ("r", "alpha", "a", "b"):
        assert getattr(cdnow_fit, name) == pytest.approx(getattr(PUBLISHED, name), rel=1e-2), name
    ll = bgnbd_log_likelihood(cdnow_fit, cdnow["frequency"], cdnow["recency"], cdnow["T"])
    assert ll.shape == (2357,)
    assert ll.sum() == pytest.approx(-9582.4, abs=0.1)


def test_log_likelihood_at_published_params_is_the_published_value(cdnow):
    ll = bgnbd_log_likelihood(PUBLISHED, cdnow["frequency"], cdnow["recency"], cdnow["T"])
    assert ll.sum() == pytest.approx(-9582.4, abs=0.5)


def test_expected_purchases_published_example(cdnow_fit):
    # FHL (2005): customer with x=2, t_x=30.43, T=38.86 expects 1.226 purchases in the next 39 weeks.
    assert float(expected_purchases(cdnow_fit, 39.0, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=1e-3)
    assert float(expected_purchases(PUBLISHED, 39.0, 2, 30.43, 38.86)) == pytest.approx(1.226, abs=1e-3)


def test_expected_purchases_matches_untransformed_formula_and_stays_finite():
    p = PUBLISHED
    x, t_x, T, t = np.array([0.0, 1, 2, 7]), np.array([0.0, 1.7, 30.43, 35.0]), 38.86, 39.0
    z = t / (p.alpha + T + t)
    direct = (
        (p.a + p.b + x - 1) / (p.a - 1)
        * (1 - ((p.alpha + T) / (p.alpha + T + t)) ** (p.r + x) * hyp2f1(p.r + x, p.b + x, p.a + p.b + x - 1, z))
        / (1 + (x > 0) * p.a / (p.b + x - 1) * ((p.alpha + T) / (p.alpha + t_x)) ** (p.r + x))
    )
    np.testing.assert_allclose(expected_purchases(p, t, x, t_x, T), direct, rtol=1e-9)
    heavy = expected_purchases(p, t, [300.0, 2000.0], [38.8, 38.8], T)
    assert np.all(np.isfinite(heavy)) and np.all(heavy > 0)


def test_p_alive_and_no_purchase_limits():
    p = PUBLISHED
    x, t_x, T = np.array([0.0, 2, 2]), np.array([0.0, 30.43, 5.0]), np.full(3, 38.86)
    pa = p_alive(p, x, t_x, T)
    assert pa[0] == 1.0  # no repeat purchase, so no chance to have dropped out yet
    assert pa[1] > pa[2]  # a long silence since the last purchase lowers P(alive)
    np.testing.assert_allclose(p_no_purchase_within(p, 0.0, x, t_x, T), 1.0)
    np.testing.assert_allclose(p_no_purchase_within(p, 1e40, x, t_x, T), 1.0 - pa, atol=1e-6)
    short, long = p_no_purchase_within(p, 4.0, x, t_x, T), p_no_purchase_within(p, 52.0, x, t_x, T)
    assert np.all((0 < long) & (long < short) & (short < 1))


def test_invalid_summaries_are_rejected():
    with pytest.raises(ValueError):
        p_alive(PUBLISHED, [1.0], [10.0], [5.0])  # recency > T
    with pytest.raises(ValueError):
        p_alive(PUBLISHED, [0.0], [3.0], [5.0])  # recency without a repeat purchase
    with pytest.raises(ValueError):
        p_no_purchase_within(PUBLISHED, -1.0, [1.0], [2.0], [5.0])


def _purchases(lam: np.ndarray, T: np.ndarray, end: np.ndarray, rng: np.random.Generator, drop: np.ndarray | None = None):
    """Poisson purchases at rates `lam` from 0 until `end` (or, with `drop`, until a dropout right after a purchase
    with that probability): (x, t_x) up to T, holdout purchases after T, the dropout time (inf without)."""
    n = T.size
    t, x, t_x, holdout = np.zeros(n), np.zeros(n), np.zeros(n), np.zeros(n)
    died_at = np.full(n, np.inf)
    active = np.ones(n, bool)
    while active.any():
        idx = np.flatnonzero(active)
        t[idx] += rng.exponential(1.0 / lam[idx])
        over = t[idx] > end[idx]
        active[idx[over]] = False
        idx = idx[~over]
        cal = t[idx] <= T[idx]
        x[idx[cal]] += 1
        t_x[idx[cal]] = t[idx[cal]]
        holdout[idx[~cal]] += 1
        if drop is not None:
            dies = rng.random(idx.size) < drop[idx]
            died_at[idx[dies]] = t[idx[dies]]
            active[idx[dies]] = False
    return x, t_x, holdout, died_at


def _simulate(params: BGNBDParams, T: np.ndarray, horizon: float, rng: np.random.Generator):
    """BG/NBD customers acquired at 0: (x, t_x, T) up to T, holdout purchases in (T, T+horizon], alive at T."""
    lam = rng.gamma(params.r, 1.0 / params.alpha, T.size)
    drop = rng.beta(params.a, params.b, T.size)  # dropout only right after a (repeat) purchase
    x, t_x, holdout, died_at = _purchases(lam, T, T + horizon, rng, drop)
    return x, t_x, holdout, died_at > T


def _assert_calibrated(p_none: np.ndarray, holdout: np.ndarray) -> None:
    """P(no purchase in the holdout) against the observed share, overall and by decile of the prediction."""
    observed = holdout == 0
    assert abs(p_none.mean() - observed.mean()) < 0.02
    deciles = pd.qcut(p_none, 10, labels=False, duplicates="drop")
    by_decile = pd.DataFrame({"pred": p_none, "obs": observed, "bin": deciles}).groupby("bin").mean()
    assert (by_decile["pred"] - by_decile["obs"]).abs().max() < 0.1


def test_simulation_recovery_ranking_and_calibration():
    true = BGNBDParams(r=0.75, alpha=4.0, a=0.8, b=2.5)
    rng = np.random.default_rng(7)
    T = rng.uniform(26.0, 52.0, 5000)
    horizon = 26.0
    x, t_x, holdout, alive = _simulate(true, T, horizon, rng)

    fit = fit_bgnbd(x, t_x, T)
    # Tolerances ~3.5 sd of the estimator at n=5000 (30 seeds: sd 2-4% for r, alpha; 7-10% for a, b).
    assert fit.r == pytest.approx(true.r, rel=0.15)
    assert fit.alpha == pytest.approx(true.alpha, rel=0.15)
    assert fit.a == pytest.approx(true.a, rel=0.35)
    assert fit.b == pytest.approx(true.b, rel=0.35)

    assert roc_auc_score(alive, p_alive(fit, x, t_x, T)) > 0.7

    _assert_calibrated(p_no_purchase_within(fit, horizon, x, t_x, T), holdout)

    expected = expected_purchases(fit, horizon, x, t_x, T)
    assert expected.mean() == pytest.approx(holdout.mean(), rel=0.1)


# Fader & Hardie (2005), "A Note on Implementing the Pareto/NBD Model in MATLAB": the CDNOW calibration data
PARETO_PUBLISHED = ParetoNBDParams(r=0.553, alpha=10.578, s=0.606, beta=11.669)


def test_paretonbd_cdnow_fit_reproduces_published_estimates(cdnow):
    fit = fit_paretonbd(cdnow["frequency"], cdnow["recency"], cdnow["T"])
    for name in ("r", "alpha", "s", "beta"):
        assert getattr(fit, name) == pytest.approx(getattr(PARETO_PUBLISHED, name), rel=2e-3), name
    assert paretonbd_log_likelihood(fit, cdnow["frequency"], cdnow["recency"], cdnow["T"]).sum() == pytest.approx(-9594.98, abs=0.02)


def test_paretonbd_likelihood_equals_the_integral_over_the_death_time():
    """The closed form (2F1) against its definition: alive through T, or died at tau in (t_x, T], integrated
    numerically over tau with the gamma mixtures taken in closed form."""
    from scipy.integrate import quad
    from scipy.special import gammaln

    p = ParetoNBDParams(r=0.8, alpha=6.0, s=1.3, beta=4.0)  # alpha > beta
    q = ParetoNBDParams(r=0.4, alpha=3.0, s=0.5, beta=9.0)  # alpha < beta
    for params in (p, q):
        for x, t_x, T in ((0, 0.0, 10.0), (1, 2.5, 10.0), (6, 9.0, 30.0), (40, 20.0, 52.0), (3, 7.0, 7.0)):
            r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
            scale = np.exp(gammaln(r + x) - gammaln(r) + r * np.log(alpha))
            alive = (beta / (beta + T)) ** s / (alpha + T) ** (r + x)
            died, _ = quad(lambda tau: s * beta**s / (beta + tau) ** (s + 1) / (alpha + tau) ** (r + x), t_x, T, epsabs=0, epsrel=1e-12)
            expected = np.log(scale * (alive + died))
            assert float(paretonbd_log_likelihood(params, x, t_x, T)) == pytest.approx(expected, rel=1e-9, abs=1e-9), (params, x)


def test_paretonbd_heavy_buyers_with_beta_far_above_alpha_stay_finite_and_exact():
    """Where 2F1's series overflows (x in the hundreds, beta >> alpha: inf - inf), A0 comes from Pfaff's
    transformation or, failing that, quadrature: finite and equal to an adaptive integral of its definition."""
    from shopsight.btyd import _paretonbd_log_a0, _paretonbd_log_a0_quad

    p = ParetoNBDParams(r=2.0, alpha=0.3, s=0.5, beta=200.0)
    x, t_x, T = np.array([300.0, 700.0, 700.0, 700.0, 0.0]), np.array([51.0, 103.0, 90.0, 103.0, 0.0]), np.array([52.0, 104.0, 104.0, 103.0, 80.0])
    got = _paretonbd_log_a0(p, x, t_x, T)
    assert got[3] == -np.inf  # t_x = T: no time to die in
    for i in (0, 1, 2, 4):
        assert got[i] == pytest.approx(_paretonbd_log_a0_quad(p, x[i], t_x[i], T[i]), rel=1e-8), i
    for values in (paretonbd_p_alive(p, x, t_x, T), paretonbd_p_no_purchase_within(p, 2.0, x, t_x, T), paretonbd_log_likelihood(p, x, t_x, T)):
        assert np.isfinite(values).all()
    assert float(paretonbd_p_alive(p, 700, 90.0, 104.0)) < 1e-30 < float(paretonbd_p_alive(p, 700, 103.0, 104.0))


def _simulate_paretonbd(params: ParetoNBDParams, T: np.ndarray, horizon: float, rng: np.random.Generator):
    """Pareto/NBD customers acquired at 0: (x, t_x) up to T, holdout purchases in (T, T+horizon], alive at T."""
    lam = rng.gamma(params.r, 1.0 / params.alpha, T.size)
    death = rng.exponential(1.0 / rng.gamma(params.s, 1.0 / params.beta, T.size))
    x, t_x, holdout, _ = _purchases(lam, T, np.minimum(T + horizon, death), rng)
    return x, t_x, holdout, death > T


def test_paretonbd_simulation_recovery_ranking_and_calibration():
    true = ParetoNBDParams(r=0.75, alpha=4.0, s=0.6, beta=8.0)
    rng = np.random.default_rng(11)
    T = rng.uniform(26.0, 52.0, 6000)
    horizon = 13.0
    x, t_x, holdout, alive = _simulate_paretonbd(true, T, horizon, rng)

    fit = fit_paretonbd(x, t_x, T)
    assert fit.r == pytest.approx(true.r, rel=0.2)
    assert fit.alpha == pytest.approx(true.alpha, rel=0.25)
    assert fit.s / fit.beta == pytest.approx(true.s / true.beta, rel=0.35)  # the mean death rate; s and beta trade off

    p_live = paretonbd_p_alive(fit, x, t_x, T)
    assert roc_auc_score(alive, p_live) > 0.7
    assert np.all((p_live > 0) & (p_live <= 1))
    _assert_calibrated(paretonbd_p_no_purchase_within(fit, horizon, x, t_x, T), holdout)
    # with the true parameters the probability is exact: the mean matches within sampling error
    exact = paretonbd_p_no_purchase_within(true, horizon, x, t_x, T)
    assert abs(exact.mean() - (holdout == 0).mean()) < 3 * np.sqrt(0.25 / x.size) + 0.005


def test_paretonbd_limits():
    p = PARETO_PUBLISHED
    # no horizon, no purchase; a customer who just bought (t_x = T) is alive for sure
    assert np.allclose(paretonbd_p_no_purchase_within(p, 0.0, [0, 3], [0.0, 5.0], [10.0, 20.0]), 1.0)
    assert np.allclose(paretonbd_p_alive(p, [2, 5], [10.0, 20.0], [10.0, 20.0]), 1.0)
    # a long silence lowers P(alive); heavy buyers stay finite
    assert float(paretonbd_p_alive(p, 5, 2.0, 50.0)) < float(paretonbd_p_alive(p, 5, 45.0, 50.0))
    heavy = paretonbd_p_no_purchase_within(p, 13.0, [300.0, 300.0], [51.9, 10.0], [52.0, 52.0])  # ~5 purchases a week
    assert np.all(np.isfinite(heavy)) and heavy[0] < 0.01 and heavy[1] > 0.99


def _events(rows: list[tuple[str, str, str]]) -> pd.DataFrame:
    frame = pd.DataFrame(rows, columns=["user_id", "event_type", "timestamp"])
    frame["user_id"] = frame["user_id"].astype("string")
    frame["event_type"] = frame["event_type"].astype("category")
    frame["timestamp"] = pd.to_datetime(frame["timestamp"], utc=True)
    return frame


@pytest.fixture()
def tiny_events() -> pd.DataFrame:
    return _events(
        [
            ("a", "view", "2023-12-25 08:00"),  # activity before the first purchase does not start T
            ("a", "purchase", "2024-01-01 10:00"),
            ("a", "purchase", "2024-01-01 15:00"),  # same day: not a repeat purchase
            ("a", "purchase", "2024-01-08 09:00"),
            ("a", "purchase", "2024-02-05 23:00"),
            ("a", "view", "2024-02-20 12:00"),
            ("a", "purchase", "2024-03-02 12:00"),  # after the cutoff
            ("b", "view", "2024-02-10 12:00"),
            ("b", "cart", "2024-02-12 12:00"),
            ("c", "purchase", "2024-02-29 22:00"),  # on the last observed day
            ("c", "purchase", "2024-03-01 01:00"),  # after the cutoff
            ("d", "purchase", "2024-03-05 10:00"),  # only after the cutoff: absent
        ]
    )


def test_rfm_summary_exact_values(tiny_events):
    cutoff = pd.Timestamp("2024-03-01", tz="UTC")  # last observed day 2024-02-29 (leap year)
    days = rfm_summary(tiny_events, cutoff, time_unit_days=1.0)
    assert list(days.index) == ["a", "b", "c"]
    assert list(days.columns) == ["frequency", "recency", "T"]
    assert (days.dtypes == "float64").all()
    assert days.loc["a"].tolist() == [2.0, 35.0, 59.0]  # purchase days Jan 1, Jan 8, Feb 5
    assert days.loc["b"].tolist() == [0.0, 0.0, 19.0]  # no purchase: T from first activity (Feb 10)
    assert days.loc["c"].tolist() == [0.0, 0.0, 0.0]

    weeks = rfm_summary(tiny_events, cutoff)
    pd.testing.assert_frame_equal(weeks, days.assign(recency=days["recency"] / 7.0, T=days["T"] / 7.0))


def test_rfm_summary_calibration_start_and_empty(tiny_events):
    cutoff = pd.Timestamp("2024-03-01", tz="UTC")
    late = rfm_summary(tiny_events, cutoff, time_unit_days=1.0, calibration_start=pd.Timestamp("2024-01-05", tz="UTC"))
    assert late.loc["a"].tolist() == [1.0, 28.0, 52.0]  # first purchase now Jan 8
    empty = rfm_summary(tiny_events, pd.Timestamp("2023-01-01", tz="UTC"))
    assert empty.empty and list(empty.columns) == ["frequency", "recency", "T"]
