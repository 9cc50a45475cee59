"""Synthetic card transactions with rare fraud, a sensitive attribute and a drift knob.

The data set behind the course's fraud-detection case study. Every row is one card transaction
described by :data:`FEATURES`; the label says whether it was fraud. Nothing here is real: the
rows come from the small generative story below, so any size can be made offline, the same
arguments always give the same rows, and the story can be told to learners.

Generative story
----------------
1. **Customers with habits.** A fixed pool of :data:`N_CUSTOMERS` customers (drawn once per
   ``seed``, shared by the train and test splits, like an out-of-time split of one bank's
   book) each get an age group, a typical amount (log-normal, a little higher for older
   customers), a taste for online shopping (higher when young), a small chance of paying
   abroad, a favourite time of day (later when young), a card age (older cards for older
   customers) and an activity rate (transactions per day).
2. **Legit transactions follow habits.** A transaction picks a customer at random, goes online
   or in person with the customer's online propensity, abroad with the customer's travel
   propensity, picks a merchant category (groceries, fuel, restaurants... in person; online
   retail, digital goods, subscriptions, money transfers... online), an amount around the
   customer's typical amount shifted by the category, an hour around the favourite hour, a
   distance from home that depends on the channel, and rarely a new device.
3. **Fraud comes from three patterns** (each transaction is fraud with probability
   ``fraud_rate``), and each pattern overlaps some legit behaviour:

   * ``card_testing`` (45 %): bursts of tiny online purchases of digital goods at any hour,
     many transactions in the last 24 hours a few minutes apart, often from a new device.
     Legit digital-goods and subscription payments are small too.
   * ``night_foreign`` (30 %): a cloned card used abroad (or far from home) at night for large
     purchases of electronics, jewellery or travel. Travelling customers pay abroad too.
   * ``account_takeover`` (25 %): someone logs in from a new device and moves money or buys
     electronics online for more than the customer usually spends, at hours that ignore the
     customer's habits. Legit customers also change phones and make big purchases.

The **sensitive attribute** is the customer's age group (0: under 30, 1: 30 or older). It is
not a feature, but it shapes habits (online share, hours, amounts, card age), so a fraud model
can treat the groups differently: the fairness lessons measure exactly that.

Drift
-----
``drift`` in ``[0, 1]`` moves the world smoothly away from the training distribution
(``drift=0``). Legit customers shop online more (logit +1.2), spend more (amounts x1.4), shop
about three hours later, travel more, change devices more often, make more transactions and
buy more digital goods and money transfers. Fraudsters adapt: card testers use larger
amounts, slower bursts and merchants that look like ordinary online retail; cloned cards are
used in the daytime, at home more often and for smaller amounts; account takeovers spoof the
known device more often, stay closer to the customer's amounts and hours, and become the most
common pattern. Every row uses the same random numbers whatever the drift, so a small change
of ``drift`` makes a small change of the data.

Determinism
-----------
Rows are drawn in blocks of :data:`BLOCK` rows, each from its own
``numpy.random.SeedSequence(seed, spawn_key=(split, block))`` stream; the global random state
is never used. Train and test use different streams, and the first ``n`` rows of a larger
request are exactly the rows of a request for ``n``.

Examples
--------
>>> data = load_transactions("train", 1000, seed=0)
>>> tuple(data.x.shape), data.classes
((1000, 12), ['legit', 'fraud'])
>>> bool((load_transactions("train", 1000, seed=0).x == data.x).all())
True
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.special import expit

from labkit.data.base import LabData

__all__ = [
    "BLOCK",
    "CATEGORIES",
    "FEATURES",
    "GENERATOR_VERSION",
    "N_CUSTOMERS",
    "PATTERNS",
    "load_transactions",
]

GENERATOR_VERSION: int = 2
"""Bumped whenever the same arguments would give different rows (cached models retrain)."""

FEATURES: list[str] = [
    "log_amount",  # natural log of the amount in dollars
    "hour_sin",  # hour of day on the unit circle
    "hour_cos",
    "merchant_risk",  # historical fraud risk of the merchant category, in [0, 1]
    "log_distance_km",  # log(1 + km between the home address and the merchant or IP location)
    "online",  # 1 card not present (online), 0 in person
    "foreign",  # 1 merchant or IP abroad
    "card_age_years",  # years since the card was issued
    "txn_last_24h",  # transactions on the card in the previous 24 hours
    "amount_vs_typical",  # log(amount / the customer's typical amount)
    "new_device",  # 1 online from a device never seen on this account
    "log_minutes_since_last",  # log(1 + minutes since the card's previous transaction)
]

PATTERNS: tuple[str, ...] = ("card_testing", "night_foreign", "account_takeover")

# name, fraud risk score of the category, log-amount offset against the customer's typical amount
CATEGORIES: tuple[tuple[str, float, float], ...] = (
    ("grocery", 0.05, 0.0),
    ("fuel", 0.15, -0.2),
    ("restaurant", 0.10, -0.3),
    ("retail", 0.25, 0.2),
    ("electronics", 0.55, 1.0),
    ("jewelry", 0.65, 1.2),
    ("travel", 0.45, 1.3),
    ("online_retail", 0.35, 0.1),
    ("digital_goods", 0.60, -1.5),
    ("subscription", 0.20, -1.0),
    ("money_transfer", 0.80, 0.8),
)

N_CUSTOMERS: int = 20_000
BLOCK: int = 4096
SPLITS: dict[str, int] = {"train": 1, "test": 2}
CLASSES = ["legit", "fraud"]

FloatArray = NDArray[np.float64]
BoolArray = NDArray[np.bool_]
IntArray = NDArray[np.int64]


def _table(weights: list[float]) -> FloatArray:
    p = np.asarray(weights, dtype=np.float64)
    return p / p.sum()


# Category mix of each kind of transaction: weights over CATEGORIES (in that order) at drift 0
# and at drift 1; a drift in between interpolates linearly.
# fmt: off
_MIX: dict[str, tuple[FloatArray, FloatArray]] = {
    #                      groc fuel rest retl elec jewl trvl onln digi subs xfer
    "legit_in_person": (
        _table([30, 15, 22, 20,  5,  2,  6,  0,  0,  0,  0]),
        _table([28, 12, 24, 22,  6,  2,  6,  0,  0,  0,  0]),
    ),
    "legit_online": (
        _table([ 0,  0,  0,  0,  8,  0, 10, 40, 15, 20,  7]),
        _table([ 0,  0,  0,  0,  8,  0,  9, 33, 20, 18, 12]),
    ),
    "card_testing": (
        _table([ 0,  0,  0,  0,  0,  0,  0, 30, 50, 20,  0]),
        _table([ 0,  0,  0,  0,  0,  0,  0, 50, 30, 20,  0]),
    ),
    "night_foreign": (
        _table([ 0,  0,  0, 20, 35, 25, 20,  0,  0,  0,  0]),
        _table([ 0,  0,  0, 40, 30, 15, 15,  0,  0,  0,  0]),
    ),
    "account_takeover": (
        _table([ 0,  0,  0,  0, 30,  0,  0, 25,  0,  0, 45]),
        _table([ 0,  0,  0,  0, 25,  0,  0, 50,  0,  0, 25]),
    ),
}
# fmt: on


def _check_args(split: str, n: int, seed: int, drift: float, fraud_rate: float) -> None:
    if split not in SPLITS:
        raise ValueError(f"split must be 'train' or 'test', got {split!r}")
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or n <= 0:
        raise ValueError(f"n must be a positive integer (number of transactions), got {n!r}")
    if isinstance(seed, bool) or not isinstance(seed, int | np.integer) or seed < 0:
        raise ValueError(f"seed must be a non-negative integer, got {seed!r}")
    if (
        isinstance(drift, bool)
        or not isinstance(drift, int | float | np.floating | np.integer)
        or not math.isfinite(drift)
        or not 0.0 <= drift <= 1.0
    ):
        raise ValueError(f"drift must be a number in [0, 1] (0: the training distribution), got {drift!r}")
    if (
        isinstance(fraud_rate, bool)
        or not isinstance(fraud_rate, int | float | np.floating)
        or not math.isfinite(fraud_rate)
        or not 0.0 < fraud_rate < 0.5
    ):
        raise ValueError(
            f"fraud_rate must be a number in the open interval (0, 0.5), e.g. 0.015, got {fraud_rate!r}"
        )


def _customers(seed: int) -> dict[str, FloatArray]:
    """The customer pool for ``seed``: habits shared by both splits."""
    rng = np.random.default_rng(np.random.SeedSequence(seed, spawn_key=(0,)))
    m = N_CUSTOMERS
    older = (rng.random(m) < 0.65).astype(np.float64)
    z = rng.standard_normal((m, 4))
    return {
        "older": older,
        "log_typical": 3.0 + 0.35 * older + 0.5 * z[:, 0],
        "online_logit": -0.7 + 0.9 * (1.0 - older) + 0.8 * z[:, 1],
        "p_foreign": expit(-3.6 + 0.3 * older + 0.9 * z[:, 2]),
        "peak_hour": 14.0 + 2.0 * (1.0 - older) + 2.0 * z[:, 3],
        "card_age": rng.gamma(2.0, 1.5 + 0.6 * older),
        "rate": rng.gamma(2.0, 1.0, m) * (1.0 + 0.25 * (1.0 - older)) + 0.2,
    }


def _draws(seed: int, split: str, n: int) -> tuple[FloatArray, FloatArray]:
    """Uniforms ``(n, 10)`` and standard normals ``(n, 4)``, block by block."""
    us, zs = [], []
    for block in range(-(-n // BLOCK)):
        rows = min(BLOCK, n - block * BLOCK)
        ss = np.random.SeedSequence(seed, spawn_key=(SPLITS[split], block))
        rng = np.random.default_rng(ss)
        # Always draw a full block so a block's rows do not depend on n.
        us.append(rng.random((BLOCK, 10))[:rows])
        zs.append(rng.standard_normal((BLOCK, 4))[:rows])
    return np.concatenate(us), np.concatenate(zs)


def _pick(u: FloatArray, kinds: IntArray, tables: list[FloatArray]) -> IntArray:
    """Inverse-CDF draw of a category per row from the table ``tables[kinds[i]]``."""
    cum = np.cumsum(np.stack(tables), axis=1)[kinds]
    out: IntArray = np.minimum((u[:, None] >= cum).sum(axis=1), len(CATEGORIES) - 1)
    return out


def load_transactions(
    split: str,
    n: int,
    *,
    seed: int = 0,
    drift: float = 0.0,
    fraud_rate: float = 0.015,
    **options: Any,
) -> LabData:
    """Generate ``n`` synthetic card transactions (see the module docstring for the story).

    Parameters
    ----------
    split:
        ``"train"`` or ``"test"``; they come from different random streams.
    n:
        Number of transactions; the first ``n`` rows of a larger request are the same rows.
    seed:
        Seed of the customer pool and of the transactions (a non-negative integer).
    drift:
        How far the world has moved from the training distribution, in ``[0, 1]``: ``0`` is
        the training distribution, ``1`` the most shifted (legit habits and fraud patterns both
        change smoothly in between).
    fraud_rate:
        Probability that a transaction is fraud, in ``(0, 0.5)``; about 1.5 % by default.
    **options:
        No generator options exist besides the ones above: anything else raises ``ValueError``.

    Returns
    -------
    LabData
        ``x`` float32 ``(n, 12)`` with columns :data:`FEATURES`, ``y`` int64 (0 legit,
        1 fraud), ``classes=["legit", "fraud"]``, ``sensitive`` int64 age group (0 under 30,
        1 aged 30 or older; not a column of ``x``), and ``info`` with the generator settings
        and the number of rows of each fraud pattern.

    Raises
    ------
    ValueError
        For a bad ``split``, ``n``, ``seed``, ``drift``, ``fraud_rate`` or an unknown option.

    Examples
    --------
    >>> data = load_transactions("test", 5000, seed=1, drift=0.5)
    >>> data.feature_names[:3]
    ['log_amount', 'hour_sin', 'hour_cos']
    >>> 0 < int(data.y.sum()) < 200
    True
    """
    unknown = sorted(options)
    if unknown:
        raise ValueError(
            f"unknown option(s) {', '.join(map(repr, unknown))} for transactions; "
            "expected only seed, drift and fraud_rate"
        )
    _check_args(split, n, seed, drift, fraud_rate)
    n, seed, d = int(n), int(seed), float(drift)

    cust = _customers(seed)
    u, z = _draws(seed, split, n)
    who = np.minimum((u[:, 0] * N_CUSTOMERS).astype(np.int64), N_CUSTOMERS - 1)
    older = cust["older"][who]
    log_typical = cust["log_typical"][who]
    peak = cust["peak_hour"][who]
    rate = cust["rate"][who]
    fraud: BoolArray = u[:, 1] < fraud_rate

    # Which fraud pattern (drawn for every row, used only for fraud rows).
    w = np.array([0.45 - 0.15 * d, 0.30 - 0.05 * d, 0.25 + 0.20 * d])
    pattern: IntArray = np.minimum((u[:, 2, None] >= np.cumsum(w / w.sum())).sum(1), 2)
    ct, nf = pattern == 0, pattern == 1  # pattern 2 (account takeover) is the default case

    # Channel, abroad, device.
    p_online = np.where(
        fraud,
        np.select([ct, nf], [0.95, 0.30], 1.0),
        expit(cust["online_logit"][who] + 1.2 * d),
    )
    online = u[:, 3] < p_online
    p_foreign = np.where(
        fraud,
        np.select([ct, nf], [0.30, 0.65 - 0.4 * d], 0.12),
        np.minimum(cust["p_foreign"][who] * (1.0 + 1.5 * d), 1.0),
    )
    foreign = u[:, 4] < p_foreign
    p_new = np.where(fraud, np.select([ct, nf], [0.35, 0.2], 0.7 - 0.4 * d), 0.05 + 0.07 * d)
    new_device = online & (u[:, 6] < p_new)

    # Merchant category.
    names = ["legit_in_person", "legit_online", *PATTERNS]
    tables = [(1 - d) * _MIX[k][0] + d * _MIX[k][1] for k in names]
    kind = np.where(fraud, 2 + pattern, online.astype(np.int64))
    cat = _pick(u[:, 5], kind, tables)
    risk = np.array([c[1] for c in CATEGORIES])[cat]
    offset = np.array([c[2] for c in CATEGORIES])[cat]

    # Amount (log dollars).
    mean_legit = log_typical + offset + 0.35 * d
    mean_fraud = np.select(
        [ct, nf],
        [np.log(4.0) + 1.2 * d, log_typical + 0.5 * offset + 1.0 - 0.5 * d],
        log_typical + 0.5 * offset + 0.8 - 0.4 * d,
    )
    log_amount = np.where(fraud, mean_fraud, mean_legit) + np.where(fraud, 0.8, 0.6) * z[:, 0]
    log_amount = np.clip(log_amount, np.log(0.5), np.log(25_000.0))

    # Hour of day.
    hour_fraud = np.select(
        [ct, nf], [12.0 + 7.0 * z[:, 1], 2.5 + 8.0 * d + 4.0 * z[:, 1]], peak + (5.0 - 3.0 * d) * z[:, 1]
    )
    hour = np.mod(np.where(fraud, hour_fraud, peak + 3.0 * d + 3.2 * z[:, 1]), 24.0)
    angle = 2.0 * np.pi * hour / 24.0

    # Distance between home and the merchant (in person) or the IP location (online).
    far_domestic = fraud & nf & ~online
    log_km = np.select(
        [foreign, far_domestic, online],
        [np.log(2000.0) + 0.8 * z[:, 2], np.log(150.0) + 1.0 * z[:, 2], np.log(20.0) + 1.2 * z[:, 2]],
        np.log(4.0) + 1.0 * z[:, 2],
    )

    # Card activity: transactions in the last 24 h (Poisson) and minutes since the last one.
    lam = np.where(
        fraud,
        np.select([ct, nf], [3.0 * (1.0 - 0.3 * d), rate + 1.0], rate + 0.5),
        rate * (1.0 + 0.5 * d),
    )
    base = np.where(fraud & ct, 1.0, 0.0)
    count = base + _poisson_quantile(u[:, 7], lam)
    # Legit shopping sessions (several purchases within minutes) look like bursts too.
    session = ~fraud & (u[:, 9] < 0.12)
    count += session
    mean_minutes = np.where(
        fraud,
        np.select([ct, nf], [30.0 * (1.0 + 4.0 * d), 120.0], 240.0),
        np.where(session, 20.0, 1440.0 / lam),
    )
    minutes = -np.log1p(-u[:, 8]) * mean_minutes

    x = np.empty((n, len(FEATURES)), dtype=np.float32)
    x[:, 0] = log_amount
    x[:, 1] = np.sin(angle)
    x[:, 2] = np.cos(angle)
    x[:, 3] = np.clip(risk + 0.08 * z[:, 3], 0.0, 1.0)
    x[:, 4] = np.log1p(np.exp(log_km))
    x[:, 5] = online
    x[:, 6] = foreign
    x[:, 7] = cust["card_age"][who]
    x[:, 8] = count
    x[:, 9] = log_amount - log_typical
    x[:, 10] = new_device
    x[:, 11] = np.log1p(minutes)

    counts = np.bincount(pattern[fraud], minlength=len(PATTERNS))
    return LabData(
        name="transactions",
        split=split,
        x=torch.from_numpy(x),
        y=torch.from_numpy(fraud.astype(np.int64)),
        classes=list(CLASSES),
        feature_names=list(FEATURES),
        sensitive=torch.from_numpy(older.astype(np.int64)),
        info={
            "generator_version": GENERATOR_VERSION,
            "seed": seed,
            "drift": d,
            "fraud_rate": float(fraud_rate),
            "observed_fraud_rate": float(fraud.mean()),
            "n_customers": N_CUSTOMERS,
            "fraud_patterns": {p: int(c) for p, c in zip(PATTERNS, counts, strict=True)},
            "sensitive": "age group: 0 under 30, 1 aged 30 or older",
        },
    )


def _poisson_quantile(u: FloatArray, lam: FloatArray) -> FloatArray:
    """Poisson counts by inversion: the smallest ``k`` with ``P(K <= k) >= u``.

    One uniform per row whatever ``lam`` is, so a small change of ``lam`` (of ``drift``)
    changes few counts. Walks the CDF upwards for the rows not yet done; the rates here are
    small, so a few dozen vectorised steps suffice.
    """
    k = np.zeros_like(lam)
    pmf = np.exp(-lam)
    cdf = pmf.copy()
    todo = np.flatnonzero(u > cdf)
    step = 0
    while todo.size and step < 1000:
        step += 1
        pmf[todo] *= lam[todo] / step
        cdf[todo] += pmf[todo]
        k[todo] = step
        todo = todo[u[todo] > cdf[todo] * (1.0 + 1e-12)]
    return k
