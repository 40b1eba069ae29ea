"""``BatchHistogram.observe_many`` exposes what one ``observe`` per value would.

It writes prometheus_client's bucket state itself, so this pins it to the installed version:
an upgrade that changes the Histogram's insides fails here, not on a dashboard.
"""

from __future__ import annotations

import random

from prometheus_client import CollectorRegistry, Histogram, generate_latest

from supervisor.observe.metrics import AGE_BUCKETS, DURATION_BUCKETS, BatchHistogram


def exposition(kind: type[Histogram], buckets: tuple[float, ...], batches: list[list[float]]):
    registry = CollectorRegistry()
    histogram = kind("h_seconds", "h", ["binding"], buckets=buckets, registry=registry)
    child = histogram.labels("b")
    for batch in batches:
        if kind is BatchHistogram:
            child.observe_many(batch)
        else:
            for value in batch:
                child.observe(value)
    return [
        line for line in generate_latest(registry).decode().splitlines() if "_created" not in line
    ]


def test_observe_many_matches_one_observe_per_value():
    rng = random.Random(7)
    for buckets in (DURATION_BUCKETS, AGE_BUCKETS):
        edges = [*buckets, 0.0, 1e9, float("inf")]  # on a bound, below all, above all
        batches = [
            [
                rng.choice(edges) if rng.random() < 0.3 else rng.uniform(0, 2 * buckets[-1])
                for _ in range(rng.randint(0, 12))
            ]
            for _ in range(200)
        ]
        batches = [[round(v, 3) if v != float("inf") else v for v in b] for b in batches]
        plain = exposition(Histogram, buckets, batches)
        batched = exposition(BatchHistogram, buckets, batches)
        assert batched == plain
        assert any(line.startswith('h_seconds_count{binding="b"} ') for line in plain)


def test_observe_many_of_nothing_changes_nothing():
    assert exposition(BatchHistogram, AGE_BUCKETS, [[]]) == exposition(Histogram, AGE_BUCKETS, [])
