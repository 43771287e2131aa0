"""One /metrics for a worker of two processes (app/runtime/record_process.py): the worker's own
exposition with the record process's merged in, so Prometheus scrapes one target per worker and
every dashboard and rule reads the same series as from a one-process worker.

The two processes run different stages, so most series are only in one of them. Where both have a
series (same name, same labels: counters made at 0 on start, `crm_guard_up`), counters,
histograms and gauges are added (each process holds its own partitions: entries, lag, counts
add up), `_created` keeps the earlier time, and `crm_guard_up` is 1 only when both processes are
up. When the record process cannot be scraped the worker reports `crm_guard_up 0`: it is not
whole, and CrmGuardDown fires.
"""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.metrics_core import Metric
from prometheus_client.parser import text_string_to_metric_families
from prometheus_client.samples import Sample

UP = "crm_guard_up"
"""The family whose value is the worker being up: both processes must be."""


def merge_expositions(own: str, peer: str | None) -> bytes:
    """`own` (this process's text exposition) with `peer`'s series merged in; `peer` None means
    the other process did not answer: everything of this one, with `crm_guard_up` at 0."""
    families = {family.name: family for family in text_string_to_metric_families(own)}
    if peer is None:
        up = families.get(UP)
        if up is not None:
            up.samples = [sample._replace(value=0.0) for sample in up.samples]
    else:
        for family in text_string_to_metric_families(peer):
            held = families.get(family.name)
            if held is None:
                families[family.name] = family
            elif held.type == family.type:
                held.samples = _merged_samples(held, family)
            # A family of the same name but another type cannot come from the same code: keep ours.
    return generate_latest(_Fixed(list(families.values())).registry())


def _merged_samples(own: Metric, peer: Metric) -> list[Sample]:
    by_key = {_key(sample): sample for sample in own.samples}
    for sample in peer.samples:
        key = _key(sample)
        held = by_key.get(key)
        if held is None:
            by_key[key] = sample
        elif sample.name.endswith("_created"):
            by_key[key] = held._replace(value=min(held.value, sample.value))
        elif own.name == UP:
            by_key[key] = held._replace(value=min(held.value, sample.value))
        else:
            by_key[key] = held._replace(value=held.value + sample.value)
    return list(by_key.values())


def _key(sample: Sample) -> tuple[str, tuple[tuple[str, str], ...]]:
    return sample.name, tuple(sorted(sample.labels.items()))


class _Fixed:
    """A collector of already-built families (what generate_latest renders)."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)

    def registry(self) -> CollectorRegistry:
        registry = CollectorRegistry(auto_describe=False)
        registry.register(self)  # type: ignore[arg-type]
        return registry
