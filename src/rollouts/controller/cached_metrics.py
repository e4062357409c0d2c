"""Per-rollout metric families whose text exposition is cached per label set.

prometheus_client formats every label set of a family on each scrape. Argo's `rollout_reconcile`
(a histogram) and `rollout_events_total` (a counter) have label sets per rollout: at 10,000
reconciled rollouts formatting them took 2.2–3.0 s and ~3 s of the event loop the proxy
shares, on every scrape (bench/RESULTS.md). Here each label set's lines are rendered once per
change (observed or incremented since the previous scrape) and joined otherwise. The text is
exactly what `generate_latest` writes for the same values, the `_created` family included,
which a test checks; `collect` yields the same families for callers of `generate_latest`.

The first two labels are the rollout's namespace and name: `retain` drops the label sets of
rollouts that no longer exist, as Argo removes a deleted rollout's metrics (with
prometheus_client they stayed until the process ended).
"""

from __future__ import annotations

import time
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Sequence
from typing import cast

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric
from prometheus_client.registry import Collector
from prometheus_client.utils import floatToGoString

# How prometheus_client writes a sample value (untyped there).
_go = cast(Callable[[float], str], floatToGoString)

Rollout = tuple[str, str]  # (namespace, name)


def escape_label(value: str) -> str:
    """A label value as the text exposition writes it."""
    return value.replace("\\", r"\\").replace("\n", r"\n").replace('"', r"\"")


class _Series:
    """One label set's values, and its lines as last rendered (None: changed since)."""

    __slots__ = ("counts", "created", "lines", "value")

    def __init__(self, buckets: int) -> None:
        self.counts = [0] * buckets  # histogram: per bucket, not cumulative (the last is +Inf)
        self.value = 0.0  # counter: its value; histogram: the sum of observations
        self.created = time.time()
        self.lines: tuple[str, str] | None = None  # (samples, `_created` line)


class _HistogramChild:
    """What a histogram's `labels(...)` returns, as a prometheus_client child does."""

    __slots__ = ("_bounds", "_series")

    def __init__(self, series: _Series, bounds: tuple[float, ...]) -> None:
        self._series = series
        self._bounds = bounds

    def observe(self, amount: float) -> None:
        series = self._series
        # (the first bucket whose upper bound is >= amount: `le` is inclusive)
        series.counts[bisect_left(self._bounds, amount)] += 1
        series.value += amount
        series.lines = None


class _CounterChild:
    """What a counter's `labels(...)` returns, as a prometheus_client child does."""

    __slots__ = ("_series",)

    def __init__(self, series: _Series) -> None:
        self._series = series

    def inc(self, amount: float = 1.0) -> None:
        if amount < 0:
            raise ValueError("counters can only be incremented by non-negative amounts")
        self._series.value += amount
        self._series.lines = None


class _CachedFamily(Collector):
    """What both kinds share: label sets, the rendering cache, silencing and pruning."""

    type_name = ""

    def __init__(self, name: str, documentation: str, label_names: Sequence[str], buckets: int) -> None:
        if tuple(label_names[:2]) != ("namespace", "name"):
            raise ValueError("the first two labels must be namespace and name")
        self.name = name  # as given (a counter's ends with _total)
        self.documentation = documentation
        self.label_names = tuple(label_names)
        # generate_latest writes labels sorted by name: where each of ours goes
        self._order = sorted(range(len(label_names)), key=lambda i: label_names[i])
        self._buckets = buckets
        self._series: dict[tuple[str, ...], _Series] = {}
        self._silenced = False

    def _get(self, values: tuple[str, ...]) -> _Series:
        series = self._series.get(values)
        if series is None:
            if len(values) != len(self.label_names):
                raise ValueError(f"{self.name}: expected labels {self.label_names}, got {values}")
            series = self._series[values] = _Series(self._buckets)
        return series

    def rollouts(self) -> set[Rollout]:
        return {(values[0], values[1]) for values in self._series}

    def retain(self, keep: set[Rollout]) -> None:
        """Drop the label sets of rollouts not in `keep` (rollouts that no longer exist)."""
        for values in [v for v in self._series if (v[0], v[1]) not in keep]:
            del self._series[values]

    def set_silenced(self, silenced: bool) -> None:
        """While silenced, `collect` yields nothing (`render` writes the family itself)."""
        self._silenced = silenced

    def _labels(self, values: tuple[str, ...]) -> str:
        names = self.label_names
        return ",".join(f'{names[i]}="{escape_label(values[i])}"' for i in self._order)

    def _family(self) -> str:
        """The family's name in the exposition (a counter's without _total)."""
        return self.name

    def render(self) -> str:
        """The family's text exposition, as `generate_latest` writes it."""
        family = self._family()
        sample_name = self.name if self.type_name == "counter" else family
        head = f"# HELP {sample_name} {self.documentation}\n# TYPE {sample_name} {self.type_name}\n"
        if not self._series:
            return head
        samples = [head]
        created = [f"# HELP {family}_created {self.documentation}\n# TYPE {family}_created gauge\n"]
        for values, series in self._series.items():
            lines = series.lines
            if lines is None:
                labels = self._labels(values)
                lines = series.lines = (
                    self._render_samples(labels, series),
                    f"{family}_created{{{labels}}} {_go(series.created)}\n",
                )
            samples.append(lines[0])
            created.append(lines[1])
        return "".join(samples) + "".join(created)

    def _render_samples(self, labels: str, series: _Series) -> str:
        raise NotImplementedError

    def _metric(self) -> Metric:
        raise NotImplementedError

    def _add(self, metric: Metric, values: list[str], series: _Series) -> None:
        raise NotImplementedError

    def collect(self) -> Iterator[Metric]:
        if self._silenced:
            return
        metric = self._metric()
        created = GaugeMetricFamily(f"{self._family()}_created", self.documentation, labels=self.label_names)
        for values, series in self._series.items():
            self._add(metric, list(values), series)
            created.add_metric(list(values), series.created)
        yield metric
        if self._series:
            yield created


class CachedHistogram(_CachedFamily):
    type_name = "histogram"

    def __init__(self, name: str, documentation: str, label_names: Sequence[str], buckets: Iterable[float]) -> None:
        bounds = tuple(float(b) for b in buckets)
        if bounds[-1] != float("inf"):
            bounds += (float("inf"),)
        super().__init__(name, documentation, label_names, len(bounds))
        self._bounds = bounds
        self._les = tuple(_go(b) for b in bounds)

    def labels(self, *values: str) -> _HistogramChild:
        return _HistogramChild(self._get(values), self._bounds)

    def _cumulative(self, series: _Series) -> list[tuple[str, float]]:
        total = 0
        out = []
        for le, count in zip(self._les, series.counts, strict=True):
            total += count
            out.append((le, float(total)))
        return out

    def _render_samples(self, labels: str, series: _Series) -> str:
        name = self.name
        cumulative = self._cumulative(series)
        parts = [f'{name}_bucket{{le="{le}",{labels}}} {_go(total)}\n' for le, total in cumulative]
        parts.append(f"{name}_count{{{labels}}} {_go(cumulative[-1][1])}\n")
        parts.append(f"{name}_sum{{{labels}}} {_go(series.value)}\n")
        return "".join(parts)

    def _metric(self) -> Metric:
        return HistogramMetricFamily(self.name, self.documentation, labels=self.label_names)

    def _add(self, metric: Metric, values: list[str], series: _Series) -> None:
        cast(HistogramMetricFamily, metric).add_metric(values, self._cumulative(series), series.value)


class CachedCounter(_CachedFamily):
    type_name = "counter"

    def __init__(self, name: str, documentation: str, label_names: Sequence[str]) -> None:
        if not name.endswith("_total"):
            raise ValueError("a counter's name ends with _total")
        super().__init__(name, documentation, label_names, 0)

    def labels(self, *values: str) -> _CounterChild:
        return _CounterChild(self._get(values))

    def _family(self) -> str:
        return self.name.removesuffix("_total")

    def _render_samples(self, labels: str, series: _Series) -> str:
        return f"{self.name}{{{labels}}} {_go(series.value)}\n"

    def _metric(self) -> Metric:
        return CounterMetricFamily(self._family(), self.documentation, labels=self.label_names)

    def _add(self, metric: Metric, values: list[str], series: _Series) -> None:
        cast(CounterMetricFamily, metric).add_metric(values, series.value)
