"""Read Prometheus text from a component's /metrics: histograms by labels, their difference
between two scrapes, and quantiles from buckets as PromQL's histogram_quantile interpolates them."""

from __future__ import annotations

import math
import ssl
import urllib.request
from dataclasses import dataclass, field

from prometheus_client.parser import text_string_to_metric_families

Labels = tuple[tuple[str, str], ...]


@dataclass
class Hist:
    buckets: dict[float, float] = field(default_factory=dict)  # upper bound -> cumulative count
    sum: float = 0.0
    count: float = 0.0

    def minus(self, other: Hist | None) -> Hist:
        if other is None:
            return self
        return Hist({le: c - other.buckets.get(le, 0.0) for le, c in self.buckets.items()},
                    self.sum - other.sum, self.count - other.count)

    @property
    def mean(self) -> float:
        return self.sum / self.count if self.count else math.nan

    def quantile(self, q: float) -> float:
        """Linear interpolation inside the bucket holding the q-th observation (histogram_quantile)."""
        if not self.count:
            return math.nan
        rank = q * self.count
        prev_le, prev_c = 0.0, 0.0
        for le in sorted(self.buckets):
            c = self.buckets[le]
            if c >= rank:
                if math.isinf(le):
                    return prev_le
                return prev_le + (le - prev_le) * ((rank - prev_c) / (c - prev_c) if c > prev_c else 1.0)
            prev_le, prev_c = le, c
        return prev_le


def parse_histograms(text: str) -> dict[str, dict[Labels, Hist]]:
    """name -> labels (without le) -> Hist, for every histogram in the exposition text."""
    out: dict[str, dict[Labels, Hist]] = {}
    for fam in text_string_to_metric_families(text):
        if fam.type != "histogram":
            continue
        by_labels = out.setdefault(fam.name, {})
        for s in fam.samples:
            labels = tuple(sorted((k, v) for k, v in s.labels.items() if k != "le"))
            h = by_labels.setdefault(labels, Hist())
            if s.name.endswith("_bucket"):
                h.buckets[float(s.labels["le"])] = s.value
            elif s.name.endswith("_sum"):
                h.sum = s.value
            elif s.name.endswith("_count"):
                h.count = s.value
    return out


def diff(after: dict[str, dict[Labels, Hist]], before: dict[str, dict[Labels, Hist]]) -> dict[str, dict[Labels, Hist]]:
    return {name: {lb: h.minus(before.get(name, {}).get(lb)) for lb, h in series.items()}
            for name, series in after.items()}


def get(hists: dict[str, dict[Labels, Hist]], name: str, **labels: str) -> Hist:
    want = tuple(sorted(labels.items()))
    return hists.get(name, {}).get(want, Hist())


def scrape(url: str, token: str | None = None, timeout: float = 10.0) -> str:
    """GET a /metrics page (HTTPS without verifying: test components serve self-signed certs)."""
    req = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    ctx = ssl.create_default_context()
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    with urllib.request.urlopen(req, timeout=timeout, context=ctx) as r:
        return str(r.read().decode())


def samples(text: str) -> dict[tuple[str, Labels], float]:
    """Every sample of the exposition text: (sample name, labels) -> value (gauges, counters ...)."""
    out: dict[tuple[str, Labels], float] = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out
