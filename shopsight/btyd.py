"""Buy-till-you-die references: the BG/NBD model (Fader, Hardie & Lee 2005, "Counting Your Customers the Easy
Way") and the Pareto/NBD model (Schmittlein, Morrison & Colombo 1987), fitted by maximum likelihood with SciPy,
and the per-customer quantities derived from them.

BG/NBD: while alive a customer buys as a Poisson process with rate lambda ~ Gamma(r, alpha) (rate alpha);
after each repeat purchase they drop out for good with probability p ~ Beta(a, b).
Pareto/NBD: the same purchases, but the lifetime is exponential with rate mu ~ Gamma(s, beta): dropout can
happen at any time, not only right after a purchase.
A customer is described by (x, t_x, T): x repeat purchases, the last at t_x, observed for T time units since
their first purchase.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy.optimize import minimize
from scipy.special import betaln, expit, gammaln, hyp2f1, roots_legendre

DAY = pd.Timedelta(days=1)


@dataclass(frozen=True)
class BGNBDParams:
    """BG/NBD population parameters: lambda ~ Gamma(shape r, rate alpha), p ~ Beta(a, b)."""

    r: float
    alpha: float
    a: float
    b: float


def rfm_summary(
    events: pd.DataFrame,
    cutoff: pd.Timestamp,
    time_unit_days: float = 7.0,
    calibration_start: pd.Timestamp | None = None,
) -> pd.DataFrame:
    """Per-user (frequency, recency, T) from canonical events in [calibration_start, cutoff).

    Follows the `lifetimes` convention at day resolution: purchases are bucketed into UTC calendar days;
    frequency x = number of distinct purchase days - 1; recency t_x = last purchase day - first purchase day;
    T = last observed day - first purchase day, where the last observed day is the calendar day holding the
    last instant before `cutoff` (so a purchase on that day has t_x = T). t_x and T are in units of
    `time_unit_days` (weeks by default, as in the paper).

    Users with events in the window but no purchase get x = 0, t_x = 0 and T measured from their first
    event day: they are treated as acquired at first activity with no repeat purchase (an approximation;
    the model itself only describes customers who have bought once).

    Returns a frame indexed by user_id (sorted) with float64 columns frequency, recency, T.
    """
    cutoff = _as_utc(cutoff)
    ts = events["timestamp"]
    ts = ts.dt.tz_localize("UTC") if ts.dt.tz is None else ts.dt.tz_convert("UTC")
    mask = ts < cutoff
    if calibration_start is not None:
        mask &= ts >= _as_utc(calibration_start)
    sel = events.loc[mask, ["user_id", "event_type"]]
    cols = ["frequency", "recency", "T"]
    if sel.empty:
        return pd.DataFrame(columns=cols, index=pd.Index([], name="user_id", dtype="string"), dtype="float64")

    day = ts[mask].dt.floor("D")
    users = sel["user_id"].astype("string")
    is_purchase = (sel["event_type"].astype("string") == "purchase").to_numpy(bool, na_value=False)
    last_day = (cutoff - pd.Timedelta(1, "ns")).floor("D")

    first_seen = day.groupby(users).min()
    bought = pd.DataFrame({"user_id": users[is_purchase], "day": day[is_purchase]}).drop_duplicates()
    per_buyer = bought.groupby("user_id")["day"].agg(["min", "max", "count"])

    out = pd.DataFrame(index=first_seen.index.rename("user_id").sort_values())
    start = per_buyer["min"].reindex(out.index).fillna(first_seen.reindex(out.index))
    unit = time_unit_days * DAY
    out["frequency"] = (per_buyer["count"].reindex(out.index).fillna(1) - 1).astype("float64")
    out["recency"] = ((per_buyer["max"] - per_buyer["min"]) / unit).reindex(out.index).fillna(0.0).astype("float64")
    out["T"] = ((last_day - start) / unit).astype("float64")
    return out


def bgnbd_log_likelihood(params: BGNBDParams, frequency, recency, T) -> np.ndarray:
    """Per-customer log-likelihood ln L(r, alpha, a, b | x, t_x, T) of FHL (2005) eq. (6)."""
    x, t_x, T = _check_rfm(frequency, recency, T)
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    base = gammaln(r + x) - gammaln(r) + r * np.log(alpha)
    alive = betaln(a, b + x) - betaln(a, b) - (r + x) * np.log(alpha + T)
    # The "dropped out after the last purchase" term exists only for x > 0; x is clipped to keep betaln finite.
    x1 = np.maximum(x, 1.0)
    dead = betaln(a + 1.0, b + x1 - 1.0) - betaln(a, b) - (r + x) * np.log(alpha + t_x)
    dead = np.where(x > 0, dead, -np.inf)
    return base + np.logaddexp(alive, dead)


def fit_bgnbd(frequency, recency, T, *, penalizer: float = 0.0, initial: BGNBDParams | None = None) -> BGNBDParams:
    """Maximum-likelihood BG/NBD parameters (L-BFGS-B on log-parameters).

    Minimises -mean(log-likelihood) + penalizer * (r^2 + alpha^2 + a^2 + b^2) (the `lifetimes` L2 penalty).
    Raises RuntimeError when the optimiser does not converge.
    """
    x, t_x, T = _check_rfm(frequency, recency, T)
    if x.size == 0:
        raise ValueError("no customers to fit")
    start = initial or BGNBDParams(1.0, 1.0, 1.0, 1.0)
    theta0 = np.log([start.r, start.alpha, start.a, start.b])

    def objective(theta: np.ndarray) -> float:
        p = np.exp(theta)
        ll = bgnbd_log_likelihood(BGNBDParams(*p), x, t_x, T)
        return float(-ll.mean() + penalizer * np.sum(p**2))

    # Log-parameters are bounded only to keep exp() finite while the line search explores.
    res = minimize(
        objective, theta0, method="L-BFGS-B", bounds=[(-20.0, 20.0)] * 4,
        options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 2000},
    )
    if not res.success or not np.isfinite(res.fun):
        raise RuntimeError(f"BG/NBD fit did not converge: {res.message}")
    return BGNBDParams(*(float(v) for v in np.exp(res.x)))


def p_alive(params: BGNBDParams, frequency, recency, T) -> np.ndarray:
    """P(customer still alive at T | x, t_x, T), FHL (2005) / Fader-Hardie note; exactly 1 when x = 0."""
    x, t_x, T = _check_rfm(frequency, recency, T)
    return expit(-_log_dead_odds(params, x, t_x, T))


def expected_purchases(params: BGNBDParams, t, frequency, recency, T) -> np.ndarray:
    """E[Y(t) | x, t_x, T]: expected purchases in (T, T + t], FHL (2005) eq. (10).

    The 2F1 term is evaluated after Euler's transformation,
    ((alpha+T)/(alpha+T+t))^(r+x) 2F1(r+x, b+x; a+b+x-1; z) = (1-z)^(a-1) 2F1(a+b-1-r, a-1; a+b+x-1; z)
    with z = t/(alpha+T+t), which stays finite for heavy buyers where the original series overflows.
    Requires a != 1 (the closed form divides by a - 1).
    """
    x, t_x, T = _check_rfm(frequency, recency, T)
    t = np.asarray(t, dtype="float64")
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    if np.isclose(a, 1.0):
        raise ValueError("expected_purchases needs a != 1")
    z = t / (alpha + T + t)
    hyp = (1.0 - z) ** (a - 1.0) * hyp2f1(a + b - 1.0 - r, a - 1.0, a + b + x - 1.0, z)
    return (a + b + x - 1.0) / (a - 1.0) * (1.0 - hyp) * expit(-_log_dead_odds(params, x, t_x, T))


def p_no_purchase_within(params: BGNBDParams, horizon, frequency, recency, T) -> np.ndarray:
    """P(no purchase in (T, T + horizon] | x, t_x, T): the churn score.

    Dropout happens only right after a purchase, so a customer alive at T makes no purchase in the horizon
    iff their Poisson process has no arrival there: e^(-lambda h). Given alive and the data, lambda ~
    Gamma(r + x, alpha + T), so P(0 | alive, data) = ((alpha + T) / (alpha + T + h))^(r + x), and
    P(0 | data) = 1 - P(alive) * (1 - ((alpha + T) / (alpha + T + h))^(r + x)).
    """
    x, t_x, T = _check_rfm(frequency, recency, T)
    h = np.asarray(horizon, dtype="float64")
    if np.any(h < 0):
        raise ValueError("horizon must be >= 0")
    log_zero_if_alive = (params.r + x) * (np.log(params.alpha + T) - np.log(params.alpha + T + h))
    return 1.0 + p_alive(params, x, t_x, T) * np.expm1(log_zero_if_alive)


@dataclass(frozen=True)
class ParetoNBDParams:
    """Pareto/NBD population parameters: lambda ~ Gamma(shape r, rate alpha), mu ~ Gamma(shape s, rate beta)."""

    r: float
    alpha: float
    s: float
    beta: float


def paretonbd_log_likelihood(params: ParetoNBDParams, frequency, recency, T) -> np.ndarray:
    """Per-customer ln L(r, alpha, s, beta | x, t_x, T) of the Pareto/NBD (Fader, Hardie & Lee 2005, "A Note on
    Deriving the Pareto/NBD Model and Related Expressions", eq. 19-22):
    L = Gamma(r+x) alpha^r beta^s / Gamma(r) [1 / ((alpha+T)^(r+x) (beta+T)^s) + s / (r+s+x) A0]."""
    x, t_x, T = _check_rfm(frequency, recency, T)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    base = gammaln(r + x) - gammaln(r) + r * np.log(alpha) + s * np.log(beta)
    alive = -(r + x) * np.log(alpha + T) - s * np.log(beta + T)
    dead = np.log(s) - np.log(r + s + x) + _paretonbd_log_a0(params, x, t_x, T)
    return base + np.logaddexp(alive, dead)


def _paretonbd_log_a0(params: ParetoNBDParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """ln A0, the "died between t_x and T" term: A0 = (r+s+x) int_{t_x}^{T} (alpha+tau)^-(r+x) (beta+tau)^-(s+1) dtau
    = F(t_x) - F(T) with F(t) = 2F1(r+s+x, k; r+s+x+1; z_t) / (m+t)^(r+s+x), m = max(alpha, beta), k = s + 1 if
    alpha >= beta else r + x, z_t = |alpha-beta| / (m+t). -inf where t_x = T (no time to die in).

    The series overflows for heavy buyers when beta >> alpha (inf - inf = NaN): such entries are taken after Pfaff's
    transformation, 2F1(a, k; a+1; z) = (1-z)^-k 2F1(k, 1; a+1; z/(z-1)) with the power in log space, and entries
    still not finite by adaptive quadrature of the integral (scipy.integrate.quad, scaled by the integrand's largest
    value, split where it has fallen by factors of ten)."""
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    x, t_x, T = np.broadcast_arrays(*(np.asarray(v, dtype="float64") for v in (x, t_x, T)))
    rsx = r + s + x
    k = np.broadcast_to(s + 1.0 if alpha >= beta else r + x, x.shape)
    low, high = min(alpha, beta), max(alpha, beta)
    gap = high - low

    def log_f(t: np.ndarray) -> np.ndarray:
        return np.log(hyp2f1(rsx, k, rsx + 1.0, gap / (high + t))) - rsx * np.log(high + t)

    def log_f_pfaff(t: np.ndarray) -> np.ndarray:  # 1 - z_t = (low + t) / (high + t), z/(z-1) = -gap / (low + t)
        return -k * (np.log(low + t) - np.log(high + t)) + np.log(hyp2f1(k, 1.0, rsx + 1.0, -gap / (low + t))) - rsx * np.log(high + t)

    def difference(first: np.ndarray, second: np.ndarray) -> np.ndarray:  # ln(e^first - e^second), first >= second
        return first + np.log(-np.expm1(np.minimum(second - first, 0.0)))

    open_window = t_x < T
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        out = np.where(open_window, difference(log_f(t_x), log_f(T)), -np.inf)
        bad = ~np.isfinite(out) & open_window
        if bad.any():
            out = np.where(bad, difference(log_f_pfaff(t_x), log_f_pfaff(T)), out)
    bad = ~np.isfinite(out) & open_window
    if bad.any():
        out = np.array(out, dtype="float64")
        for i in np.flatnonzero(bad.ravel()):
            out.flat[i] = _paretonbd_log_a0_quad(params, x.flat[i], t_x.flat[i], T.flat[i])
    return out


def _paretonbd_log_a0_quad(params: ParetoNBDParams, x: float, t_x: float, T: float) -> float:
    """ln A0 by adaptive quadrature of its integrand over [t_x, T], divided by its value at t_x (its largest). The
    interval is split at t_x + L 10^j (L: the integrand's e-folding length at t_x) so a narrow peak is not missed."""
    from scipy.integrate import quad

    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta

    def log_g(tau):
        return -(r + x) * np.log(alpha + tau) - (s + 1.0) * np.log(beta + tau)

    top = log_g(t_x)
    length = 1.0 / ((r + x) / (alpha + t_x) + (s + 1.0) / (beta + t_x))
    edges = [t_x, *(t_x + length * 10.0**j for j in range(-1, 12) if t_x + length * 10.0**j < T), T]
    value = sum(quad(lambda tau: np.exp(log_g(tau) - top), a, b, limit=200, epsabs=0.0, epsrel=1e-11)[0]
                for a, b in zip(edges[:-1], edges[1:]))
    return float(np.log(r + s + x) + top + np.log(value)) if value > 0 else -np.inf


def fit_paretonbd(frequency, recency, T, *, penalizer: float = 0.0, initial: ParetoNBDParams | None = None) -> ParetoNBDParams:
    """Maximum-likelihood Pareto/NBD parameters (L-BFGS-B on log-parameters), with the BG/NBD's L2 penalty.

    Customers with the same (x, t_x, T) are one term weighted by their count (day-resolution summaries repeat a
    lot), so a fit costs the distinct summaries, not the customers. Raises RuntimeError when it does not converge."""
    x, t_x, T = _check_rfm(frequency, recency, T)
    if x.size == 0:
        raise ValueError("no customers to fit")
    unique, counts = np.unique(np.stack([x, t_x, T], axis=1), axis=0, return_counts=True)
    ux, ut, uT = unique.T
    weights = counts / counts.sum()
    start = initial or ParetoNBDParams(1.0, 1.0, 1.0, 1.0)
    theta0 = np.log([start.r, start.alpha, start.s, start.beta])

    def objective(theta: np.ndarray) -> float:
        p = np.exp(theta)
        ll = paretonbd_log_likelihood(ParetoNBDParams(*p), ux, ut, uT)
        value = float(-(weights * ll).sum() + penalizer * np.sum(p**2))
        return value if np.isfinite(value) else 1e300  # a 2F1 overflow at an extreme trial point: steer away

    res = minimize(
        objective, theta0, method="L-BFGS-B", bounds=[(-20.0, 20.0)] * 4,
        options={"ftol": 1e-13, "gtol": 1e-9, "maxiter": 2000},
    )
    if not res.success or not np.isfinite(res.fun) or res.fun >= 1e299:
        raise RuntimeError(f"Pareto/NBD fit did not converge: {res.message}")
    return ParetoNBDParams(*(float(v) for v in np.exp(res.x)))


def paretonbd_p_alive(params: ParetoNBDParams, frequency, recency, T) -> np.ndarray:
    """P(alive at T | x, t_x, T) = 1 / (1 + s / (r+s+x) (alpha+T)^(r+x) (beta+T)^s A0)."""
    x, t_x, T = _check_rfm(frequency, recency, T)
    r, s = params.r, params.s
    log_odds = (np.log(s) - np.log(r + s + x) + (r + x) * np.log(params.alpha + T) + s * np.log(params.beta + T)
                + _paretonbd_log_a0(params, x, t_x, T))
    return expit(-log_odds)


_LEGENDRE = roots_legendre(32)


def paretonbd_p_no_purchase_within(params: ParetoNBDParams, horizon, frequency, recency, T) -> np.ndarray:
    """P(no purchase in (T, T + horizon] | x, t_x, T).

    Given alive at T and the data, lambda ~ Gamma(r+x, alpha+T) and mu ~ Gamma(s, beta+T), independent, and the
    first purchase comes before death with probability int_0^h E[lambda e^(-(lambda+mu)u)] du =
    int_0^V ((beta+T) / (beta+T+u(v)))^s dv after the substitution v = 1 - ((alpha+T) / (alpha+T+u))^(r+x)
    (V its value at h): a bounded, smooth integrand, taken by 32-point Gauss-Legendre. Then
    P(0 | data) = 1 - P(alive) * that probability.
    """
    x, t_x, T = _check_rfm(frequency, recency, T)
    h = np.asarray(horizon, dtype="float64")
    if np.any(h < 0):
        raise ValueError("horizon must be >= 0")
    x, t_x, T, h = np.broadcast_arrays(x, t_x, T, h)
    r, alpha, s, beta = params.r, params.alpha, params.s, params.beta
    shape = r + x
    upper = -np.expm1(shape * (np.log(alpha + T) - np.log(alpha + T + h)))  # V
    nodes, weights = _LEGENDRE
    v = upper[..., None] * (nodes + 1.0) / 2.0  # nodes mapped from [-1, 1] to [0, V]
    u = (alpha + T)[..., None] * np.expm1(-np.log1p(-v) / shape[..., None])
    survive = np.exp(s * (np.log(beta + T)[..., None] - np.log(beta + T[..., None] + u)))
    buy_if_alive = upper / 2.0 * (survive * weights).sum(axis=-1)
    return 1.0 - paretonbd_p_alive(params, x, t_x, T) * buy_if_alive


def _log_dead_odds(params: BGNBDParams, x: np.ndarray, t_x: np.ndarray, T: np.ndarray) -> np.ndarray:
    """ln[P(dead at T | data) / P(alive at T | data)] = ln[a/(b+x-1) ((alpha+T)/(alpha+t_x))^(r+x)], -inf at x = 0."""
    r, alpha, a, b = params.r, params.alpha, params.a, params.b
    x1 = np.maximum(x, 1.0)
    log_odds = np.log(a) - np.log(b + x1 - 1.0) + (r + x) * (np.log(alpha + T) - np.log(alpha + t_x))
    return np.where(x > 0, log_odds, -np.inf)


def _check_rfm(frequency, recency, T) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    x, t_x, T = (np.asarray(v, dtype="float64") for v in (frequency, recency, T))
    x, t_x, T = np.broadcast_arrays(x, t_x, T)
    if np.any(~np.isfinite(x) | ~np.isfinite(t_x) | ~np.isfinite(T)):
        raise ValueError("frequency, recency and T must be finite")
    if np.any(x < 0) or np.any(t_x < 0) or np.any(t_x > T):
        raise ValueError("need frequency >= 0 and 0 <= recency <= T")
    if np.any((x == 0) & (t_x != 0)):
        raise ValueError("recency must be 0 where frequency is 0")
    return x, t_x, T


def _as_utc(ts) -> pd.Timestamp:
    ts = pd.Timestamp(ts)
    return ts.tz_localize("UTC") if ts.tzinfo is None else ts.tz_convert("UTC")
