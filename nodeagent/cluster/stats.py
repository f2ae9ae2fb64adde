"""How requests spread over a Service's backends: counts and a chi-square test against uniform.

kube-proxy's iptables mode picks a backend per connection at random (`-m statistic --mode random
--probability 1/n`, then 1/(n-1), ...; seed 002: "it can only pick a pod at random, not round
robin"). Random choice gives counts that wander around N/k; round robin gives exactly N/k each.
The p-value says how surprising the counts are for a fair random choice: tiny means skewed.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass


def chi_square(counts: Iterable[int]) -> float:
    obs = list(counts)
    n = sum(obs)
    if not obs or n == 0:
        return 0.0
    expected = n / len(obs)
    return sum((o - expected) ** 2 / expected for o in obs)


def _gamma_q(s: float, x: float) -> float:
    """Upper regularized incomplete gamma Q(s, x): a series below s+1, else a continued fraction
    (the two standard expansions, e.g. Abramowitz & Stegun 6.5.29 and 6.5.31)."""
    if x <= 0:
        return 1.0
    log_prefix = s * math.log(x) - x - math.lgamma(s)
    if x < s + 1:
        term = total = 1.0 / s
        a = s
        for _ in range(1000):
            a += 1
            term *= x / a
            total += term
            if abs(term) < abs(total) * 1e-15:
                break
        return max(0.0, 1.0 - total * math.exp(log_prefix))
    # modified Lentz for the continued fraction
    tiny = 1e-300
    b = x + 1 - s
    c = 1 / tiny
    d = 1 / b
    h = d
    for i in range(1, 1000):
        an = -i * (i - s)
        b += 2
        d = an * d + b
        d = tiny if abs(d) < tiny else d
        c = b + an / c
        c = tiny if abs(c) < tiny else c
        d = 1 / d
        delta = d * c
        h *= delta
        if abs(delta - 1) < 1e-15:
            break
    return min(1.0, math.exp(log_prefix) * h)


def chi_square_p_value(stat: float, df: int) -> float:
    """P(X >= stat) for X ~ chi-square with df degrees of freedom."""
    if df <= 0:
        return 1.0
    return _gamma_q(df / 2, stat / 2)


@dataclass(frozen=True)
class Spread:
    counts: dict[str, int]
    failures: int
    chi2: float
    p_value: float
    longest_run: int  # most consecutive requests to the same backend (round robin: 1)

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def spread(answers: list[str | None], backends: Iterable[str] = ()) -> Spread:
    """answers: the backend that served each request in order (None: the request failed).
    Backends that got nothing still count (as zero) when listed in `backends`."""
    counts = Counter(a for a in answers if a is not None)
    for b in backends:
        counts.setdefault(b, 0)
    longest = run = 0
    prev: str | None = None
    for a in answers:
        run = run + 1 if a is not None and a == prev else 1
        prev = a
        longest = max(longest, run)
    stat = chi_square(counts.values())
    return Spread(dict(sorted(counts.items())), sum(a is None for a in answers), stat,
                  chi_square_p_value(stat, len(counts) - 1), longest)


def render(s: Spread, width: int = 40) -> str:
    lines = []
    top = max(s.counts.values(), default=0) or 1
    for name, n in s.counts.items():
        bar = "#" * round(width * n / top)
        pct = 100 * n / s.total if s.total else 0
        lines.append(f"  {name:40} {n:4} {pct:5.1f}%  {bar}")
    k = len(s.counts)
    lines.append(f"  {s.total} answered, {s.failures} failed; round robin would give {s.total // max(k, 1)} each")
    lines.append(f"  chi-square vs uniform = {s.chi2:.2f} (df={max(k - 1, 0)}), p-value = {s.p_value:.3f}; "
                 f"longest run on one backend = {s.longest_run}")
    return "\n".join(lines)
