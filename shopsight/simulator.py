"""The embedded default data source: a seeded, vectorised simulator of a shop plus the ground truth it sampled from.

Generative process (everything below is what the ground truth is computed from):

* Catalogue: items in categories, log-normal prices per category, Zipf popularity, low-rank item embeddings.
* Users: a Dirichlet taste over categories, a segment (low-rank embedding -> item-level affinity and price
  taste), a session rate, a purchase propensity, a price sensitivity and a churn frailty. Users arrive over
  time (a Poisson stream; a new user's first session is on the arrival day).
* Each day, for each alive user, in this order: (1) the user leaves with probability
  ``1 - exp(-hazard)``, where the hazard grows with frustration ``f`` (consecutive sessions without a
  purchase, capped) and with recency ``r`` (days since the last session day, capped); (2) the user has
  ``Poisson(rate * day_multiplier)`` sessions; (3) each session is a buying session with probability
  ``q`` = sigmoid(propensity + season + promotions - price sensitivity * price level), a deterministic
  function of the user's latent state and the day. Frustration and recency are updated from the outcomes.
* Within a session, viewed categories follow a Markov chain (stay in the category, go to its complement,
  or draw from the day's taste); the item given the category is drawn from the segment's within-category
  distribution, which is time-invariant (all time effects act on whole categories). Buying sessions cart and
  buy one viewed item (chosen with price sensitivity) or the user's staple item (repeat purchase); other
  views are carted, abandoned, removed or favourited.

Because frustration/recency change only at day starts and session outcomes are Bernoulli(q) given the
day, the truth is exact: P(purchase in horizon) and P(no activity in horizon) come from a small dynamic
programme over (frustration, recency) per user, and the next-item distribution is the chain's conditional
distribution mixed over the distribution of the next session's day.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
from pydantic import BaseModel, ConfigDict, Field, model_validator

from shopsight.schema import CANONICAL_ARROW, EVENT_TYPES

DriftScenario = Literal["none", "new_traffic_source", "price_increase", "category_shift", "seasonal_peak"]

EVENTS_SCHEMA = CANONICAL_ARROW  # the simulator writes canonical events directly
TRUTH_PURCHASE_SCHEMA = pa.schema(
    [("cutoff", pa.timestamp("ns", tz="UTC")), ("user_id", pa.string()), ("alive", pa.bool_()), ("p_purchase", pa.float64())]
)
TRUTH_CHURN_SCHEMA = pa.schema(
    [("cutoff", pa.timestamp("ns", tz="UTC")), ("user_id", pa.string()), ("alive", pa.bool_()), ("p_churn", pa.float64())]
)
TRUTH_NEXT_ITEM_SCHEMA = pa.schema(
    [
        ("cutoff", pa.timestamp("ns", tz="UTC")),
        ("user_id", pa.string()),
        ("rank", pa.int32()),
        ("item_id", pa.string()),
        ("prob", pa.float64()),
    ]
)

VIEW, CART, REMOVE, FAVORITE, PURCHASE = (EVENT_TYPES.index(t) for t in ("view", "cart", "remove_from_cart", "favorite", "purchase"))
DAY_S = 86_400.0
SESSION_GAP_S = 1_800.0  # sessions of one user are at least this far apart, so a 30-minute sessioniser agrees
CHECKOUT_AFTER_LAST_VIEW_S = 31.0  # carts happen <= 30 s after their view, so checkout always follows them
# Relative intensity of session starts per UTC hour (night low, lunch and evening peaks).
HOURLY_SHAPE = np.array(
    [0.25, 0.15, 0.1, 0.08, 0.08, 0.12, 0.3, 0.55, 0.8, 0.9, 0.95, 1.0,
     1.15, 1.1, 0.95, 0.9, 0.95, 1.05, 1.25, 1.45, 1.55, 1.4, 1.0, 0.55]
)


class SimulatorParams(BaseModel):
    """Every knob of the synthetic shop; the defaults give a fast demo (~3k users, 120 days)."""

    model_config = ConfigDict(extra="forbid")

    seed: int = 42
    # population and catalogue
    n_users: int = Field(3000, gt=0, description="users alive at start_date (the population is in steady state)")
    n_items: int = Field(500, gt=1)
    n_categories: int = Field(12, ge=2)
    start_date: str = "2026-01-05"
    days: int = Field(120, gt=0)
    burn_in_days: int | None = Field(None, ge=0, description="days simulated before start_date (not written); null = auto")
    new_users_per_day: float | None = Field(None, ge=0, description="arrivals per day from start_date; null = steady population")
    zipf_exponent: float = Field(1.05, ge=0, description="item popularity ~ rank^-exponent")
    price_median: float = Field(25.0, gt=0)
    price_category_sigma: float = Field(0.7, ge=0, description="log-sd of category median prices")
    price_lognormal_sigma: float = Field(0.5, ge=0, description="log-sd of item prices within a category")
    taste_concentration: float = Field(0.4, gt=0, description="Dirichlet concentration per category; low = focused tastes")
    n_segments: int = Field(64, gt=0, description="user segments sharing an item-affinity embedding")
    embedding_dim: int = Field(8, gt=0)
    affinity_scale: float = Field(1.5, ge=0, description="weight of the segment-item embedding affinity")
    # sessions
    session_rate: float = Field(0.3, gt=0, description="mean sessions per day of an alive user")
    session_rate_shape: float = Field(1.5, gt=0, description="gamma shape of user session rates")
    weekly_cycle: bool = True
    weekly_amplitude: float = Field(0.25, ge=0, lt=1)
    daily_cycle: bool = True
    views_per_session: float = Field(6.0, ge=1)
    event_gap_seconds: float = Field(40.0, gt=0, description="median seconds between views in a session")
    # funnel
    purchase_propensity: float = Field(0.12, gt=0, lt=1, description="median per-session purchase probability")
    purchase_propensity_sigma: float = Field(0.8, ge=0, description="logit-sd across users")
    price_sensitivity: float = Field(1.5, ge=0, description="mean user price elasticity (conversion and choice)")
    cart_rate: float = Field(0.12, ge=0, le=1, description="chance a (non-bought) view is carted")
    cart_abandonment: float = Field(0.7, ge=0, le=1, description="chance an extra cart in a buying session is not bought")
    remove_rate: float = Field(0.3, ge=0, le=1, description="chance an abandoned cart is explicitly removed")
    favorite_rate: float = Field(0.04, ge=0, le=1)
    repeat_purchase: float = Field(0.25, ge=0, le=1, description="chance a buying session re-buys the user's staple item")
    quantity_mean: float = Field(1.3, ge=1)
    sequential_dependence: float = Field(0.55, ge=0, le=1, description="chance the next view stays in the category")
    complement_prob: float = Field(0.2, ge=0, le=1, description="chance the next view moves to the complementary category")
    session_carryover: float = Field(0.6, ge=0, le=1, description="scales the dependence for a session's first view")
    # churn
    churn: bool = True
    churn_hazard_base: float = Field(0.008, ge=0, description="daily leaving hazard of a satisfied, recent user")
    churn_hazard_sigma: float = Field(0.5, ge=0, description="log-sd of user frailty")
    churn_satisfaction_effect: float = Field(1.5, ge=0, description="log-hazard increase at full frustration")
    churn_frustration_cap: int = Field(4, ge=1, description="consecutive non-buying sessions counted")
    churn_recency_effect: float = Field(1.0, ge=0, description="relative hazard increase at the recency cap")
    churn_recency_cap_days: int = Field(7, ge=1)
    # promotions
    promotions: bool = True
    promo_rate: float = Field(0.08, ge=0, description="new promotions per day")
    promo_days: int = Field(4, ge=1)
    promo_discount: float = Field(0.2, ge=0, lt=1)
    promo_conversion_effect: float = Field(1.5, ge=0, description="logit boost per unit share of discounted taste")
    promo_interest_effect: float = Field(0.7, ge=0, description="log-boost of a discounted category's interest")
    # drift
    drift_scenario: DriftScenario = "none"
    drift_start: str | None = Field(None, description="date; null = 75% of the way through")
    drift_strength: float = Field(1.0, ge=0)
    # ground truth
    truth_cutoffs: list[str] | None = Field(None, description="dates; null = every 7 days over the last half")
    horizon_days: int = Field(14, gt=0)
    churn_horizon_days: int = Field(28, gt=0)
    truth_top_k: int = Field(20, gt=0)
    chunk_users: int = Field(50_000, gt=0)

    @model_validator(mode="after")
    def _check(self) -> "SimulatorParams":
        _parse_date(self.start_date, "start_date")
        if self.drift_start is not None:
            _parse_date(self.drift_start, "drift_start")
        for c in self.truth_cutoffs or []:
            _parse_date(c, "truth_cutoffs")
        if self.n_items < self.n_categories:
            raise ValueError("n_items must be >= n_categories (every category needs an item)")
        if self.sequential_dependence + self.complement_prob > 1:
            raise ValueError("sequential_dependence + complement_prob must be <= 1")
        return self


@dataclass
class SimulationResult:
    out_dir: str
    events_path: str
    items_path: str
    truth_purchase_path: str
    truth_churn_path: str
    truth_next_item_path: str
    summary_path: str
    n_events: int
    n_users: int
    n_items: int
    n_sessions: int
    drift_start: str
    cutoffs: list[str]


def _parse_date(value: str, name: str) -> dt.date:
    try:
        return dt.date.fromisoformat(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {value!r} is not a date (YYYY-MM-DD)") from exc


def _sigmoid(x: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-x))


def _ids(prefix: str, numbers: np.ndarray, width: int) -> pa.Array:
    """'u000123'-style ids, built in Arrow (C++), not Python."""
    digits = pc.utf8_lpad(pc.cast(pa.array(numbers, type=pa.int64()), pa.string()), width=width, padding="0")
    return pc.binary_join_element_wise(pa.scalar(prefix), digits, "")


def _group_starts(sorted_keys: np.ndarray) -> np.ndarray:
    """Start offsets of runs of equal values in a sorted array."""
    if len(sorted_keys) == 0:
        return np.zeros(0, dtype=np.int64)
    return np.flatnonzero(np.r_[True, sorted_keys[1:] != sorted_keys[:-1]])


def _segment_argmax(key: np.ndarray, starts: np.ndarray, group: np.ndarray) -> np.ndarray:
    """Boolean mask of the (first) maximum of key within each contiguous group."""
    best = np.maximum.reduceat(key, starts)[group]
    is_max = key == best
    # keep only the first maximum of each group (ties are measure-zero with continuous keys, but be safe)
    first = np.flatnonzero(is_max)
    keep = np.r_[True, group[first[1:]] != group[first[:-1]]]
    mask = np.zeros(len(key), dtype=bool)
    mask[first[keep]] = True
    return mask


class _World:
    """Global, user-independent state: catalogue, segments, calendars of promotions and drift."""

    def __init__(self, p: SimulatorParams):
        self.p = p
        root = np.random.SeedSequence(p.seed)
        rng = np.random.default_rng(root.spawn(1)[0])
        C, I = p.n_categories, p.n_items
        self.C, self.I = C, I
        # mean lifetime of a new user (pilot run) sets the steady-state arrival rate and the burn-in length
        self.mean_lifetime = _mean_lifetime(p) if p.churn else math.inf
        if p.burn_in_days is not None:
            self.B = p.burn_in_days
        else:
            self.B = min(365, math.ceil(4 * self.mean_lifetime)) if p.churn else 28
        self.H = max(p.horizon_days, p.churn_horizon_days) + 1
        self.n_days_ext = self.B + p.days + self.H  # index = day + B
        self.start = dt.datetime.combine(_parse_date(p.start_date, "start_date"), dt.time(), tzinfo=dt.timezone.utc)
        self.start_ns = int(self.start.timestamp()) * 1_000_000_000
        drift_start = _parse_date(p.drift_start, "drift_start") if p.drift_start else None
        self.drift_day = (drift_start - self.start.date()).days if drift_start else int(round(p.days * 0.75))

        # catalogue: Zipf popularity on a random rank order, categories, log-normal prices
        rank = rng.permutation(I) + 1
        pop = rank.astype(float) ** -p.zipf_exponent
        self.popularity = pop / pop.sum()
        self.item_cat = np.sort(rng.integers(0, C, I))  # items sorted by category: contiguous blocks
        self.item_cat[:C] = np.arange(C)  # every category has at least one item
        self.item_cat.sort()
        cat_median = p.price_median * np.exp(rng.normal(0, p.price_category_sigma, C))
        self.base_price = np.round(cat_median[self.item_cat] * np.exp(rng.normal(0, p.price_lognormal_sigma, I)), 2)
        self.base_price = np.maximum(self.base_price, 0.5)
        self.cat_ref_price = np.array([np.median(self.base_price[self.item_cat == c]) for c in range(C)])
        self.cat_start = np.searchsorted(self.item_cat, np.arange(C))
        cat_pop = np.bincount(self.item_cat, weights=self.popularity, minlength=C)
        self.cat_base = (cat_pop + 0.02) / (cat_pop + 0.02).sum()  # Dirichlet base measure of tastes
        # complementary categories: a fixed pairing (an involution, so complement-of-complement = itself)
        perm = rng.permutation(C)
        self.comp = np.arange(C)
        for a, b in zip(perm[0::2], perm[1::2]):
            self.comp[a], self.comp[b] = b, a

        # segments: low-rank item affinity and a preference for cheaper or dearer items within a category
        k = p.embedding_dim
        item_emb = rng.normal(0, 1 / math.sqrt(k), (I, k))
        seg_emb = rng.normal(0, 1, (p.n_segments, k))
        seg_price = rng.uniform(0, 1, p.n_segments) * p.price_sensitivity
        log_rel = np.log(self.base_price / self.cat_ref_price[self.item_cat])
        score = np.log(self.popularity)[None, :] + p.affinity_scale * seg_emb @ item_emb.T - seg_price[:, None] * log_rel[None, :]
        w = np.exp(score - score.max(axis=1, keepdims=True))
        cat_sum = np.add.reduceat(w, self.cat_start, axis=1)
        self.seg_item_prob = w / cat_sum[:, self.item_cat]  # (G, I): within-category distribution, sums to 1 per category
        # flattened CDF for vectorised sampling: segment g, category c occupy (g*C + c, g*C + c + 1]
        cum = np.cumsum(self.seg_item_prob, axis=1)
        cum[:, -1] = C
        ends = self.cat_start[1:] - 1
        cum[:, ends] = np.arange(1, C)[None, :]  # exact category boundaries despite rounding
        self.seg_cdf_flat = (cum + (np.arange(p.n_segments) * C)[:, None]).ravel()

        # calendars over [-B, days + H): day multipliers, prices, interest boosts, conversion shifts
        D = self.n_days_ext
        day_idx = np.arange(D) - self.B
        dow = (self.start.weekday() + day_idx) % 7
        self.dow = dow
        self.session_mult = np.ones(D)
        if p.weekly_cycle:
            self.session_mult *= 1 + p.weekly_amplitude * np.cos(2 * np.pi * (dow - 6) / 7)  # Sunday peak
        self.price_mult = np.ones((D, C))
        self.discount = np.zeros((D, C))
        self.interest_log = np.zeros((D, C))  # log-boost of category interest (drift), not promotions
        self.q_shift = np.zeros(D)
        self.arrival_mult = np.ones(D)
        self.promo_list: list[dict] = []
        if p.promotions and p.promo_rate > 0:
            n_new = rng.poisson(p.promo_rate, D)
            for d in np.flatnonzero(n_new):
                for c in rng.choice(C, size=min(n_new[d], C), replace=False):
                    self.discount[d : d + p.promo_days, c] = p.promo_discount
                    if 0 <= d - self.B < p.days:
                        self.promo_list.append({"start_day": int(d - self.B), "category": int(c), "days": p.promo_days})
        after = day_idx >= self.drift_day
        ramp = np.clip((day_idx - self.drift_day + 1) / 7.0, 0, 1)  # effects build up over a week
        s = p.drift_strength
        self.drift_info: dict = {"scenario": p.drift_scenario, "start_day": self.drift_day}
        if p.drift_scenario == "new_traffic_source":
            self.arrival_mult[after] = 1 + 2.5 * s
        elif p.drift_scenario == "price_increase":
            c = int(np.argmax(self.cat_base * self.cat_ref_price))  # the category with the largest spend
            self.price_mult[after, c] = 1 + 0.4 * s
            self.drift_info["category"] = int(c)
        elif p.drift_scenario == "category_shift":
            # interest moves to mid-popularity categories (not the leaders), so the category mix changes visibly
            cats = np.argsort(-self.cat_base)[2 : 2 + max(1, C // 4)]
            self.interest_log[:, cats] += (np.log1p(4.0 * s) * ramp)[:, None]
            self.drift_info["categories"] = [int(c) for c in cats]
        elif p.drift_scenario == "seasonal_peak":
            self.session_mult *= 1 + 0.6 * s * ramp
            self.q_shift += 0.4 * s * ramp
        self.log_price_mult = np.log(self.price_mult * (1 - self.discount))
        self.promo_share_weight = self.discount / max(p.promo_discount, 1e-9)  # 1 on discounted categories
        hourly = HOURLY_SHAPE if p.daily_cycle else np.ones(24)
        self.hour_cdf = np.cumsum(hourly) / hourly.sum()

        # users: initial population plus a Poisson stream of arrivals over [-B, days)
        # with churn, everyone arrives during the burn-in at rate n_users / lifetime (a steady population at
        # start_date); without churn the n_users are there from the start of the burn-in
        steady_rate = p.n_users / self.mean_lifetime if p.churn else 0.0
        n_initial = 0 if p.churn else p.n_users
        later_rate = steady_rate if p.new_users_per_day is None else p.new_users_per_day
        rate = np.where(np.arange(self.B + p.days) < self.B, steady_rate, later_rate)
        n_arr = rng.poisson(rate * self.arrival_mult[: self.B + p.days])
        self.user_arrival = np.r_[np.full(n_initial, -self.B), np.repeat(np.arange(self.B + p.days) - self.B, n_arr)]
        base_arrivals = rng.random(n_arr.sum()) < 1 / self.arrival_mult[np.repeat(np.arange(self.B + p.days), n_arr)]
        self.user_source = np.r_[np.zeros(n_initial, dtype=np.int8), (~base_arrivals).astype(np.int8)]
        self.n_users_total = len(self.user_arrival)
        self.user_id_width = max(6, len(str(self.n_users_total)))
        self.item_ids = _ids("i", np.arange(I), max(5, len(str(I))))
        self.cat_ids = _ids("c", np.arange(C), max(2, len(str(C))))

    def chunk_rng(self, chunk: int) -> np.random.Generator:
        return np.random.default_rng(np.random.SeedSequence([self.p.seed, 7, chunk]))

    def taste_on(self, theta: np.ndarray, di: int, promo: bool = True) -> np.ndarray:
        """Category interest on day index di: taste tilted by drift (and promotions), normalised."""
        log_boost = self.interest_log[di]
        if promo:
            log_boost = log_boost + self.p.promo_interest_effect * self.promo_share_weight[di]
        w = theta * np.exp(log_boost)
        return w / w.sum(axis=1, keepdims=True)

    def sample_items(self, seg: np.ndarray, cat: np.ndarray, u: np.ndarray) -> np.ndarray:
        pos = np.searchsorted(self.seg_cdf_flat, seg * self.C + cat + u, side="right")
        return np.minimum(pos - seg * self.I, self.cat_start_end(cat))

    def cat_start_end(self, cat: np.ndarray) -> np.ndarray:
        last = np.r_[self.cat_start[1:], self.I] - 1
        return last[cat]


@dataclass
class _Users:
    gid: np.ndarray  # global user index
    arrival: np.ndarray
    source: np.ndarray
    theta: np.ndarray  # (U, C)
    seg: np.ndarray
    rate: np.ndarray
    logit: np.ndarray
    price_sens: np.ndarray
    frailty: np.ndarray
    views_mean: np.ndarray
    staple: np.ndarray


def _user_dynamics(p: SimulatorParams, n: int, rng: np.random.Generator):
    """Session rate, purchase logit and churn frailty of n users."""
    rate = rng.gamma(p.session_rate_shape, p.session_rate / p.session_rate_shape, n)
    logit = math.log(p.purchase_propensity / (1 - p.purchase_propensity)) + rng.normal(0, p.purchase_propensity_sigma, n)
    frailty = np.exp(rng.normal(-0.5 * p.churn_hazard_sigma**2, p.churn_hazard_sigma, n))
    return rate, logit, frailty


def _mean_lifetime(p: SimulatorParams, n: int = 2000, max_days: int = 1500) -> float:
    """Mean days alive of a new user under the base dynamics (no drift or promotions), by a small pilot run."""
    rng = np.random.default_rng(np.random.SeedSequence([p.seed, 3]))
    rate, logit, frailty = _user_dynamics(p, n, rng)
    q = _sigmoid(logit)
    F, R = p.churn_frustration_cap, p.churn_recency_cap_days
    f = np.zeros(n, dtype=np.int64)
    r = np.ones(n, dtype=np.int64)
    idx = np.arange(n)
    days_alive = 0
    for d in range(max_days):
        if d > 0:
            idx = idx[rng.random(len(idx)) >= _death_prob(p, frailty[idx], f[idx], r[idx])]
        if not len(idx):
            break
        days_alive += len(idx)
        k = np.maximum(rng.poisson(rate[idx]), 1 if d == 0 else 0)
        fails = rng.binomial(k, 1 - q[idx])
        any_buy = fails < k
        # trailing failures after the last purchase: geometric, truncated by the session count
        trailing = np.minimum(rng.geometric(q[idx]) - 1, k - 1)
        f[idx] = np.where(any_buy, np.minimum(trailing, F), np.minimum(f[idx] + k, F))
        r[idx] = np.where(k > 0, 1, np.minimum(r[idx] + 1, R))
    return max(days_alive / n, 1.0)


def _make_users(w: _World, gids: np.ndarray, rng: np.random.Generator) -> _Users:
    p = w.p
    n = len(gids)
    source = w.user_source[gids]
    theta = rng.dirichlet(p.taste_concentration * w.C * w.cat_base, n)
    theta = np.maximum(theta, 1e-12)
    theta /= theta.sum(axis=1, keepdims=True)
    seg = rng.integers(0, p.n_segments, n)
    rate, logit, frailty = _user_dynamics(p, n, rng)
    price_sens = p.price_sensitivity * rng.gamma(4.0, 0.25, n)
    views_mean = p.views_per_session * rng.gamma(5.0, 0.2, n)
    # the new traffic source browses a lot and rarely buys
    new_src = source == 1
    views_mean[new_src] *= 2.0
    rate[new_src] *= 1.5
    logit[new_src] -= 2.5 * p.drift_strength
    cdf = np.cumsum(theta, axis=1)
    staple_cat = np.minimum((rng.random(n)[:, None] * cdf[:, -1:] > cdf).sum(axis=1), w.C - 1)
    staple = w.sample_items(seg, staple_cat, rng.random(n))
    return _Users(gids, w.user_arrival[gids], source, theta, seg, rate, logit, price_sens, frailty, views_mean, staple)


def _purchase_prob(w: _World, us: _Users, idx: np.ndarray, di: int) -> np.ndarray:
    """Per-session purchase probability of users idx on day index di (deterministic in latent state + day)."""
    p = w.p
    taste = w.taste_on(us.theta[idx], di, promo=False)
    price_level = taste @ w.log_price_mult[di]
    promo_share = taste @ w.promo_share_weight[di]
    return _sigmoid(us.logit[idx] + w.q_shift[di] + p.promo_conversion_effect * promo_share - us.price_sens[idx] * price_level)


def _death_prob(p: SimulatorParams, frailty: np.ndarray, f: np.ndarray, r: np.ndarray) -> np.ndarray:
    if not p.churn:
        return np.zeros(np.broadcast(frailty, f, r).shape)
    R = p.churn_recency_cap_days
    rec = (r - 1) / (R - 1) if R > 1 else np.zeros_like(r, dtype=float)
    hazard = p.churn_hazard_base * frailty * np.exp(p.churn_satisfaction_effect * f / p.churn_frustration_cap) * (1 + p.churn_recency_effect * rec)
    return -np.expm1(-hazard)


def _simulate_days(w: _World, us: _Users, rng: np.random.Generator, cutoff_days: list[int]):
    """Day loop (vectorised over users): returns written sessions (user, day, buying) and latent snapshots."""
    p = w.p
    n = len(us.gid)
    F, R = p.churn_frustration_cap, p.churn_recency_cap_days
    alive = np.zeros(n, dtype=bool)
    f = np.zeros(n, dtype=np.int64)
    r = np.ones(n, dtype=np.int64)
    order = np.argsort(us.arrival, kind="stable")
    arr_sorted = us.arrival[order]
    snapshots: dict[int, tuple[np.ndarray, np.ndarray, np.ndarray]] = {}
    s_user, s_day, s_buy = [], [], []
    for d in range(-w.B, p.days):
        di = d + w.B
        if d in cutoff_days:
            snapshots[d] = (alive.copy(), f.copy(), r.copy())
        if p.churn:
            idx = np.flatnonzero(alive)
            die = rng.random(len(idx)) < _death_prob(p, us.frailty[idx], f[idx], r[idx])
            alive[idx[die]] = False
        lo, hi = np.searchsorted(arr_sorted, [d, d + 1])
        new = order[lo:hi]
        alive[new] = True
        f[new] = 0
        r[new] = 1
        idx = np.flatnonzero(alive)
        n_sess = rng.poisson(us.rate[idx] * w.session_mult[di])
        n_sess[us.arrival[idx] == d] = 1  # a new user's first session is on the arrival day
        has = n_sess > 0
        su, sn = idx[has], n_sess[has]
        if len(su):
            q = _purchase_prob(w, us, su, di)
            buy = rng.random(sn.sum()) < np.repeat(q, sn)
            starts = np.r_[0, np.cumsum(sn)[:-1]]
            pos = np.where(buy, np.arange(len(buy)), -1)
            last_buy = np.maximum.reduceat(pos, starts)
            any_buy = last_buy >= starts
            trailing = starts + sn - 1 - last_buy
            f[su] = np.where(any_buy, np.minimum(trailing, F), np.minimum(f[su] + sn, F))
            if d >= 0:
                s_user.append(np.repeat(su, sn))
                s_day.append(np.full(len(buy), d, dtype=np.int64))
                s_buy.append(buy)
        r[idx] = np.where(has, 1, np.minimum(r[idx] + 1, R))
    cat = lambda xs, dt_: np.concatenate(xs) if xs else np.zeros(0, dtype=dt_)  # noqa: E731
    return cat(s_user, np.int64), cat(s_day, np.int64), cat(s_buy, bool), snapshots


@dataclass
class _Steps:
    """One row per view (chain step), in (user, session time) order."""

    user: np.ndarray
    session: np.ndarray
    day: np.ndarray
    cat: np.ndarray
    item: np.ndarray
    offset: np.ndarray  # seconds after the session start
    forced: np.ndarray  # the staple view of a repeat purchase


def _materialise(w: _World, us: _Users, rng: np.random.Generator, s_user, s_day, s_buy):
    """Turn sessions into timed events (vectorised over all sessions of the chunk)."""
    p = w.p
    S = len(s_user)
    if S == 0:
        empty = np.zeros(0, dtype=np.int64)
        events = dict(user=empty, item=empty, etype=np.zeros(0, np.int8), ts=empty, session=empty, cat=empty,
                      price=np.zeros(0), qty=empty)
        return events, _Steps(empty, empty, empty, empty, empty, np.zeros(0), np.zeros(0, bool)), 0
    # sessions are grouped by (user, day) in draw order; sort by user (stable keeps day and draw order)
    o = np.argsort(s_user, kind="stable")
    s_user, s_day, s_buy = s_user[o], s_day[o], s_buy[o]
    # views per session (+1 forced staple view for repeat purchases)
    n_views = 1 + rng.poisson(np.maximum(us.views_mean[s_user] - 1, 0))
    repeat = s_buy & (rng.random(S) < p.repeat_purchase)
    n_steps = n_views + repeat
    sess_first = np.r_[0, np.cumsum(n_steps)[:-1]]
    V = int(n_steps.sum())
    st_session = np.repeat(np.arange(S), n_steps)
    st_pos = np.arange(V) - sess_first[st_session]
    st_user = s_user[st_session]
    st_day = s_day[st_session]
    st_forced = repeat[st_session] & (st_pos == n_steps[st_session] - 1)

    # category chain: reset steps draw from the day's taste (or are the staple), others stay/complement
    first_of_user = np.r_[True, st_user[1:] != st_user[:-1]]
    first_of_session = st_pos == 0
    carry = np.where(first_of_session, p.session_carryover, 1.0)
    p_same = p.sequential_dependence * carry
    p_comp = p.complement_prob * carry
    u = rng.random(V)
    is_same = u < p_same
    is_comp = (~is_same) & (u < p_same + p_comp)
    reset = first_of_user | st_forced | ~(is_same | is_comp)
    is_comp &= ~reset
    reset_idx = np.flatnonzero(reset)
    cat_reset = np.empty(len(reset_idx), dtype=np.int64)
    forced_r = st_forced[reset_idx]
    cat_reset[forced_r] = w.item_cat[us.staple[st_user[reset_idx[forced_r]]]]
    taste_r = reset_idx[~forced_r]
    cat_reset[~forced_r] = _sample_taste_categories(w, us, st_user[taste_r], st_day[taste_r] + w.B, rng)
    last_reset = np.maximum.accumulate(np.where(reset, np.arange(V), 0))
    cum_comp = np.cumsum(is_comp)
    n_comp = cum_comp - cum_comp[last_reset]
    reset_cat_full = np.empty(V, dtype=np.int64)
    reset_cat_full[reset_idx] = cat_reset
    base_cat = reset_cat_full[last_reset]
    st_cat = np.where(n_comp % 2 == 1, w.comp[base_cat], base_cat)
    st_item = w.sample_items(us.seg[st_user], st_cat, rng.random(V))
    st_item[st_forced] = us.staple[st_user[st_forced]]
    st_cat[st_forced] = w.item_cat[st_item[st_forced]]

    # timing within the session
    gaps = rng.lognormal(math.log(p.event_gap_seconds), 1.0, V)
    gaps[first_of_session] = 0.0
    cg = np.cumsum(gaps)
    st_offset = cg - cg[sess_first][st_session]
    last_view = st_offset[sess_first + n_steps - 1]
    duration = last_view + CHECKOUT_AFTER_LAST_VIEW_S + 91.0
    start = _session_starts(w, rng, s_user, s_day, duration)

    # funnel
    di = st_day + w.B
    price = w.base_price[st_item] * np.exp(w.log_price_mult[di, st_cat])
    log_rel = np.log(price / w.cat_ref_price[st_cat])
    ps = us.price_sens[st_user]
    buy_sess = s_buy[st_session]
    gumbel = -np.log(-np.log(rng.random(V)))
    choice_key = np.where(st_forced, -np.inf, -ps * log_rel + gumbel)
    chosen = _segment_argmax(choice_key, sess_first, st_session) & buy_sess & ~repeat[st_session]
    bought_main = chosen | st_forced  # staple is bought on repeat sessions; else the chosen view
    cart_p = np.minimum(1.0, p.cart_rate * np.exp(-ps * np.clip(log_rel, -2, 2)))
    extra_cart = (~bought_main) & (rng.random(V) < cart_p)
    extra_bought = extra_cart & buy_sess & (rng.random(V) >= p.cart_abandonment)
    carted = bought_main | extra_cart
    bought = bought_main | extra_bought
    removed = carted & ~bought & (rng.random(V) < p.remove_rate)
    fav = rng.random(V) < p.favorite_rate
    qty = 1 + rng.poisson(p.quantity_mean - 1, V)

    sess_checkout = last_view + CHECKOUT_AFTER_LAST_VIEW_S + rng.uniform(0, 90, S)
    cart_t = st_offset + rng.uniform(1, 30, V)
    fav_t = st_offset + rng.uniform(1, 20, V)
    purchase_t = sess_checkout[st_session] + 0.001 * st_pos
    remove_t = sess_checkout[st_session] + rng.uniform(-25, 0, V)
    remove_t = np.maximum(remove_t, cart_t + 1.0)

    sel = [np.arange(V), np.flatnonzero(fav), np.flatnonzero(carted), np.flatnonzero(removed), np.flatnonzero(bought)]
    types = [VIEW, FAVORITE, CART, REMOVE, PURCHASE]
    times = [st_offset, fav_t, cart_t, remove_t, purchase_t]
    ev_step = np.concatenate(sel)
    ev_type = np.concatenate([np.full(len(s), t, dtype=np.int8) for s, t in zip(sel, types)])
    ev_off = np.concatenate([t[s] for s, t in zip(sel, times)])
    ev_qty = np.where(np.isin(ev_type, (CART, PURCHASE)), qty[ev_step], 1)
    ev_sess = st_session[ev_step]
    sec = st_day[ev_step] * DAY_S + start[ev_sess] + ev_off
    ts = w.start_ns + np.round(sec * 1e9).astype(np.int64)
    steps = _Steps(st_user, st_session, st_day, st_cat, st_item, st_offset, st_forced)
    events = dict(
        user=st_user[ev_step], item=st_item[ev_step], etype=ev_type, ts=ts, session=ev_sess,
        cat=st_cat[ev_step], price=np.round(price[ev_step], 2), qty=ev_qty.astype(np.int64),
    )
    return events, steps, S


def _sample_taste_categories(w: _World, us: _Users, users: np.ndarray, di: np.ndarray, rng) -> np.ndarray:
    """Draw one category per (user, day index) from that day's taste; looped by day to bound memory."""
    u = rng.random(len(users))
    out = np.empty(len(users), dtype=np.int64)
    order = np.argsort(di, kind="stable")
    bounds = np.flatnonzero(np.r_[True, di[order][1:] != di[order][:-1], True])
    for lo, hi in zip(bounds[:-1], bounds[1:]):
        sel = order[lo:hi]
        cdf = np.cumsum(w.taste_on(us.theta[users[sel]], int(di[sel[0]])), axis=1)
        out[sel] = np.minimum((u[sel, None] > cdf).sum(axis=1), w.C - 1)
    return out


def _session_starts(w: _World, rng, s_user, s_day, duration) -> np.ndarray:
    """Start second within the day: daily cycle, sessions of a user-day ordered and >= 30 min apart, inside the day."""
    S = len(s_user)
    hour = np.searchsorted(w.hour_cdf, rng.random(S), side="right")
    start = (np.minimum(hour, 23) + rng.random(S)) * 3600.0
    key = s_user * (w.p.days + 1) + s_day
    g_start = _group_starts(key)
    group = np.repeat(np.arange(len(g_start)), np.diff(np.r_[g_start, S]))
    o = np.lexsort((start, group))
    start = start[o]  # sorted within each (user, day); draw order of outcomes is kept
    pos = np.arange(S) - g_start[group]
    for k in range(1, int(pos.max(initial=0)) + 1):
        i = np.flatnonzero(pos == k)
        start[i] = np.maximum(start[i], start[i - 1] + duration[i - 1] + SESSION_GAP_S)
    end = start + duration
    g_last = np.r_[g_start[1:], S] - 1
    overflow = np.maximum(end[g_last] - (DAY_S - 1.0), 0.0)
    return np.maximum(start - overflow[group], 0.0)


def _truth_for_cutoff(w: _World, us: _Users, d_T: int, snap, steps: _Steps):
    """Exact truth at cutoff day d_T for the chunk's users known at T (any event before T)."""
    p = w.p
    alive_all, f_all, r_all = snap
    key = steps.user * (p.days + 1) + steps.day
    users = np.arange(len(us.gid))
    last = np.searchsorted(key, users * (p.days + 1) + d_T, side="left") - 1
    known = (last >= 0) & (steps.user[np.maximum(last, 0)] == users)
    ku = np.flatnonzero(known)
    alive = alive_all[ku]
    F, R = p.churn_frustration_cap, p.churn_recency_cap_days
    n = len(ku)
    di0 = d_T + w.B

    # churn: P(at least one session before leaving within the churn horizon); first-session-day weights
    fr, fk = us.frailty[ku], f_all[ku]
    rk = r_all[ku].astype(np.int64)
    surv = np.ones(n)
    p_active = np.zeros(n)
    first_day_w = np.zeros((n, p.churn_horizon_days))
    for j in range(p.churn_horizon_days):
        mu = us.rate[ku] * w.session_mult[di0 + j]
        live = surv * (1 - _death_prob(p, fr, fk, np.minimum(rk + j, R)))
        first_day_w[:, j] = live * -np.expm1(-mu)
        p_active += first_day_w[:, j]
        surv = live * np.exp(-mu)
    p_churn = 1 - alive * p_active

    # purchase: DP over (frustration, recency) along the no-purchase path
    m = np.zeros((n, F + 1, R))
    m[np.arange(n), fk, rk - 1] = 1.0
    fgrid = np.arange(F + 1)[None, :, None]
    rgrid = np.arange(1, R + 1)[None, None, :]
    death = _death_prob(p, fr[:, None, None], fgrid, rgrid)  # time-invariant hazard per state
    p_buy = np.zeros(n)
    for j in range(p.horizon_days):
        di = di0 + j
        mu = us.rate[ku] * w.session_mult[di]
        q = _purchase_prob(w, us, ku, di)
        s = m * (1 - death)
        tot = s.sum(axis=(1, 2))
        p_buy += tot * -np.expm1(-mu * q)
        new = np.zeros_like(m)
        idle = s * np.exp(-mu)[:, None, None]
        if R > 1:
            new[:, :, 1:] += idle[:, :, :-1]
        new[:, :, R - 1] += idle[:, :, R - 1]  # recency is capped
        sf = s.sum(axis=2)  # (n, F+1)
        lam = mu * (1 - q)
        all_fail = np.exp(-mu) * np.expm1(lam)  # P(n >= 1 sessions, none buying)
        remaining = np.repeat(all_fail[:, None], F + 1, axis=1)
        pn = np.exp(-mu)
        for k in range(1, F):
            pn = pn * lam / k  # P(exactly k sessions, none buying)
            for f0 in range(F + 1 - k):
                new[:, f0 + k, 0] += sf[:, f0] * pn
                remaining[:, f0] -= pn
        new[:, F, 0] += (sf * np.maximum(remaining, 0)).sum(axis=1)
        m = new
    p_purchase = alive * p_buy

    # next item: chain from the last viewed category, mixed over the day of the next session
    pa_ = np.flatnonzero(alive & (p_active > 0))
    next_rows = None
    if len(pa_):
        wts = first_day_w[pa_] / p_active[pa_, None]
        uu = ku[pa_]
        theta = us.theta[uu]
        pi = np.zeros((len(pa_), w.C))
        for j in range(p.churn_horizon_days):
            pi += wts[:, j : j + 1] * w.taste_on(theta, di0 + j)
        ps_ = p.sequential_dependence * p.session_carryover
        pc_ = p.complement_prob * p.session_carryover
        cat_prob = (1 - ps_ - pc_) * pi
        last_cat = steps.cat[last[uu]]
        rows = np.arange(len(pa_))
        cat_prob[rows, last_cat] += ps_
        cat_prob[rows, w.comp[last_cat]] += pc_
        next_rows = (uu, cat_prob)
    return ku, alive, p_purchase, p_churn, next_rows


def _top_items(w: _World, us: _Users, uu: np.ndarray, cat_prob: np.ndarray, k: int, batch: int = 4096):
    k = min(k, w.I)
    out_items, out_prob = [], []
    for b in range(0, len(uu), batch):
        probs = cat_prob[b : b + batch][:, w.item_cat] * w.seg_item_prob[us.seg[uu[b : b + batch]]]
        top = np.argpartition(-probs, k - 1, axis=1)[:, :k]
        tp = np.take_along_axis(probs, top, axis=1)
        o = np.argsort(-tp, axis=1, kind="stable")
        out_items.append(np.take_along_axis(top, o, axis=1))
        out_prob.append(np.take_along_axis(tp, o, axis=1))
    return np.concatenate(out_items), np.concatenate(out_prob)


def _cutoff_days(w: _World) -> list[int]:
    p = w.p
    if p.truth_cutoffs is not None:
        days = sorted({(_parse_date(c, "truth_cutoffs") - w.start.date()).days for c in p.truth_cutoffs})
        bad = [d for d in days if not 0 < d <= p.days]
        if bad:
            raise ValueError(f"truth_cutoffs must fall inside the simulated period (day 1..{p.days}); got day(s) {bad}")
        return days
    days = list(range(max(1, p.days // 2), p.days - p.horizon_days + 1, 7))
    return days or [max(1, p.days - p.horizon_days)]


def generate_shop(params: SimulatorParams, out_dir: str | Path, progress: bool = True) -> SimulationResult:
    """Simulate the shop and write out_dir/{events,items,truth_purchase,truth_churn,truth_next_item}.parquet
    and out_dir/simulation.json. Same params -> byte-identical files. Memory is bounded by chunk_users."""
    from tqdm.auto import tqdm

    p = params
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    w = _World(p)
    cutoffs = _cutoff_days(w)
    cutoff_ns = {d: w.start_ns + d * 86_400 * 1_000_000_000 for d in cutoffs}
    paths = {
        "events": out / "events.parquet",
        "items": out / "items.parquet",
        "purchase": out / "truth_purchase.parquet",
        "churn": out / "truth_churn.parquet",
        "next": out / "truth_next_item.parquet",
        "summary": out / "simulation.json",
    }
    items = pa.table(
        {
            "item_id": w.item_ids,
            "category": w.cat_ids.take(pa.array(w.item_cat)),
            "base_price": pa.array(w.base_price),
            "popularity": pa.array(w.popularity),
        }
    )
    pq.write_table(items, paths["items"])
    event_types = pa.array(list(EVENT_TYPES))

    n_events = n_sessions = n_active_users = 0
    # users are numbered in arrival order; striding mixes early and late arrivals so chunks are equally heavy
    n_chunks = max(1, math.ceil(w.n_users_total / p.chunk_users))
    writers = {
        "events": pq.ParquetWriter(paths["events"], EVENTS_SCHEMA, compression="zstd"),
        "purchase": pq.ParquetWriter(paths["purchase"], TRUTH_PURCHASE_SCHEMA, compression="zstd"),
        "churn": pq.ParquetWriter(paths["churn"], TRUTH_CHURN_SCHEMA, compression="zstd"),
        "next": pq.ParquetWriter(paths["next"], TRUTH_NEXT_ITEM_SCHEMA, compression="zstd"),
    }
    bar = tqdm(total=w.n_users_total, desc="simulating shop", unit="user", disable=not progress)
    try:
        for ci in range(n_chunks):
            rng = w.chunk_rng(ci)
            gids = np.arange(ci, w.n_users_total, n_chunks)
            us = _make_users(w, gids, rng)
            s_user, s_day, s_buy, snaps = _simulate_days(w, us, rng, cutoffs)
            ev, steps, S = _materialise(w, us, rng, s_user, s_day, s_buy)
            user_ids = _ids("u", us.gid, w.user_id_width)
            o = np.argsort(ev["ts"], kind="stable")
            table = pa.table(
                {
                    "user_id": user_ids.take(pa.array(ev["user"][o])),
                    "item_id": w.item_ids.take(pa.array(ev["item"][o])),
                    "event_type": event_types.take(pa.array(ev["etype"][o])),
                    "timestamp": pa.array(ev["ts"][o], type=pa.timestamp("ns", tz="UTC")),
                    "session_id": _ids("s", ev["session"][o] + n_sessions, 9),
                    "category": w.cat_ids.take(pa.array(ev["cat"][o])),
                    "price": pa.array(ev["price"][o]),
                    "quantity": pa.array(ev["qty"][o]),
                },
                schema=EVENTS_SCHEMA,
            )
            if len(table):
                writers["events"].write_table(table, row_group_size=1_000_000)
            n_events += len(table)
            n_sessions += S
            n_active_users += len(np.unique(s_user))
            _write_truth(w, us, cutoffs, cutoff_ns, snaps, steps, user_ids, writers)
            bar.update(len(gids))
            bar.set_postfix(events=f"{n_events:,}")
    finally:
        bar.close()
        for wr in writers.values():
            wr.close()

    drift_date = (w.start.date() + dt.timedelta(days=w.drift_day)).isoformat()
    cutoff_dates = [(w.start.date() + dt.timedelta(days=d)).isoformat() for d in cutoffs]
    summary = {
        "params": p.model_dump(),
        "n_events": n_events,
        "n_users": n_active_users,
        "n_users_simulated": int(w.n_users_total),
        "n_items": w.I,
        "n_sessions": n_sessions,
        "mean_lifetime_days": w.mean_lifetime if math.isfinite(w.mean_lifetime) else None,
        "burn_in_days": w.B,
        "start_date": p.start_date,
        "end_date": (w.start.date() + dt.timedelta(days=p.days)).isoformat(),
        "drift": {**w.drift_info, "start": drift_date},
        "promotions": w.promo_list,
        "truth": {
            "cutoffs": cutoff_dates,
            "purchase_horizon_observable": [d + p.horizon_days <= p.days for d in cutoffs],
            "churn_horizon_observable": [d + p.churn_horizon_days <= p.days for d in cutoffs],
            "next_item": "first view of the first session starting at or after the cutoff; users alive at the cutoff",
        },
    }
    paths["summary"].write_text(json.dumps(summary, indent=2, sort_keys=True))
    return SimulationResult(
        out_dir=str(out),
        events_path=str(paths["events"]),
        items_path=str(paths["items"]),
        truth_purchase_path=str(paths["purchase"]),
        truth_churn_path=str(paths["churn"]),
        truth_next_item_path=str(paths["next"]),
        summary_path=str(paths["summary"]),
        n_events=n_events,
        n_users=n_active_users,
        n_items=w.I,
        n_sessions=n_sessions,
        drift_start=drift_date,
        cutoffs=cutoff_dates,
    )


def _write_truth(w: _World, us: _Users, cutoffs, cutoff_ns, snaps, steps: _Steps, user_ids: pa.Array, writers) -> None:
    p = w.p
    for d in cutoffs:
        ku, alive, p_purchase, p_churn, next_rows = _truth_for_cutoff(w, us, d, snaps[d], steps)
        if not len(ku):
            continue
        ts = pa.array(np.full(len(ku), cutoff_ns[d]), type=pa.timestamp("ns", tz="UTC"))
        uid = user_ids.take(pa.array(ku))
        writers["purchase"].write_table(
            pa.table({"cutoff": ts, "user_id": uid, "alive": pa.array(alive), "p_purchase": pa.array(p_purchase)},
                     schema=TRUTH_PURCHASE_SCHEMA)
        )
        writers["churn"].write_table(
            pa.table({"cutoff": ts, "user_id": uid, "alive": pa.array(alive), "p_churn": pa.array(p_churn)},
                     schema=TRUTH_CHURN_SCHEMA)
        )
        if next_rows is None:
            continue
        uu, cat_prob = next_rows
        top_items, top_prob = _top_items(w, us, uu, cat_prob, p.truth_top_k)
        k = top_items.shape[1]
        writers["next"].write_table(
            pa.table(
                {
                    "cutoff": pa.array(np.full(len(uu) * k, cutoff_ns[d]), type=pa.timestamp("ns", tz="UTC")),
                    "user_id": user_ids.take(pa.array(np.repeat(uu, k))),
                    "rank": pa.array(np.tile(np.arange(1, k + 1, dtype=np.int32), len(uu))),
                    "item_id": w.item_ids.take(pa.array(top_items.ravel())),
                    "prob": pa.array(top_prob.ravel()),
                },
                schema=TRUTH_NEXT_ITEM_SCHEMA,
            )
        )


def simulation_summary(out_dir: str | Path) -> dict:
    """Read back out_dir/simulation.json."""
    return json.loads((Path(out_dir) / "simulation.json").read_text())


__all__ = ["SimulatorParams", "SimulationResult", "generate_shop", "simulation_summary", "EVENTS_SCHEMA"]
