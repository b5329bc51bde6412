"""Locust plugin the runner loads beside every profile: precise percentiles and a summary.

Load it as an extra locustfile (``-f profile.py,loadtests/locustfiles/harness_plugin.py``);
it defines no users, only event listeners:

- every request's response time goes into a log-bucketed histogram (2 %
  resolution; locust's own percentiles round to whole milliseconds, which
  hides sub-millisecond servers); workers send theirs to the master with
  each report, the master merges them;
- once a second the master (or the single local process) samples the user
  count and the running totals, so a stepped load gets requests/s and mean
  latency per step;
- on quitting the master writes everything as JSON to ``$LOADTEST_SUMMARY``
  (the runner reads it; without the variable nothing is written).
"""

from __future__ import annotations

import collections
import json
import math
import os
import time

import gevent
from locust import events
from locust.runners import WorkerRunner

LOG_STEP = math.log(1.02)
PERCENTILES = (0.5, 0.95, 0.99)
HIST_KEY = "greenpool_hist"
SAMPLE_INTERVAL = 0.25
SETTLE = 1.0

# (request_type, name) -> Counter(bucket -> count); buckets are log-spaced microseconds.
_histograms: dict[tuple[str, str], collections.Counter[int]] = collections.defaultdict(
    collections.Counter
)
_samples: list[tuple[float, int, int, int, float]] = []


def bucket(ms: float) -> int:
    """The histogram bucket of a response time in milliseconds."""
    us = ms * 1000.0
    return 0 if us <= 1.0 else math.ceil(math.log(us) / LOG_STEP)


def bucket_ms(key: int) -> float:
    """The upper bound, in milliseconds, of bucket ``key``."""
    return math.exp(key * LOG_STEP) / 1000.0


def percentile(counter: collections.Counter[int], fraction: float) -> float | None:
    """The response time (ms) at ``fraction`` of the recorded requests, or None when empty."""
    total = sum(counter.values())
    if not total:
        return None
    rank = max(1, math.ceil(fraction * total))
    seen = 0
    for key in sorted(counter):
        seen += counter[key]
        if seen >= rank:
            return bucket_ms(key)
    return bucket_ms(max(counter))


@events.request.add_listener
def _record(request_type, name, response_time, **_kwargs) -> None:
    if response_time is not None:
        _histograms[(request_type, name)][bucket(response_time)] += 1


@events.report_to_master.add_listener
def _attach_histogram(client_id, data) -> None:
    data[HIST_KEY] = [[t, n, list(c.items())] for (t, n), c in _histograms.items()]
    _histograms.clear()


@events.worker_report.add_listener
def _merge_histogram(client_id, data) -> None:
    for request_type, name, items in data.get(HIST_KEY, ()):
        counter = _histograms[(request_type, name)]
        for key, count in items:
            counter[key] += count


def _sample(environment) -> None:
    while True:
        total = environment.stats.total
        _samples.append((
            time.monotonic(),
            environment.runner.user_count,
            total.num_requests,
            total.num_failures,
            total.total_response_time,
        ))
        gevent.sleep(SAMPLE_INTERVAL)


@events.test_start.add_listener
def _start_sampling(environment, **_kwargs) -> None:
    if not isinstance(environment.runner, WorkerRunner) and os.environ.get("LOADTEST_SUMMARY"):
        gevent.spawn(_sample, environment)


def steps(samples: list[tuple[float, int, int, int, float]]) -> list[dict]:
    """Requests/s and mean latency for each run of samples at one user count.

    The first quarter of each step (at most ``SETTLE`` seconds) is left out
    while users spawn and connect; a step with fewer than two samples left
    reports nothing. Under ``--processes`` the master's totals move only when
    a worker reports (every 3 s), so give steps 10 s or more there.
    """
    groups: list[list[tuple]] = []
    for sample in samples:
        if groups and groups[-1][0][1] == sample[1]:
            groups[-1].append(sample)
        else:
            groups.append([sample])
    out: list[dict] = []
    for group in groups:
        start, end = group[0][0], group[-1][0]
        settle = min(SETTLE, (end - start) / 4)
        settled = [s for s in group if s[0] >= start + settle]
        if len(settled) < 2 or group[0][1] == 0:
            continue
        (t0, users, r0, f0, rt0), (t1, _, r1, f1, rt1) = settled[0], settled[-1]
        requests = r1 - r0
        out.append({
            "users": users,
            "seconds": round(t1 - t0, 2),
            "rps": requests / (t1 - t0) if t1 > t0 else 0.0,
            "failures": f1 - f0,
            "avg_ms": (rt1 - rt0) / requests if requests else None,
        })
    return out


def _entry_summary(entry, counter: collections.Counter[int] | None) -> dict:
    summary = {
        "type": entry.method or "",
        "name": entry.name,
        "requests": entry.num_requests,
        "failures": entry.num_failures,
        "rps": entry.total_rps,
        "avg_ms": entry.avg_response_time,
        "max_ms": entry.max_response_time,
    }
    for fraction in PERCENTILES:
        key = f"p{round(fraction * 100)}_ms"
        if counter:
            summary[key] = percentile(counter, fraction)
        elif entry.num_requests:
            summary[key] = entry.get_response_time_percentile(fraction)
        else:
            summary[key] = None
    return summary


@events.quitting.add_listener
def _write_summary(environment, **_kwargs) -> None:
    path = os.environ.get("LOADTEST_SUMMARY")
    if not path or isinstance(environment.runner, WorkerRunner):
        return
    stats = environment.stats
    combined: collections.Counter[int] = collections.Counter()
    for counter in _histograms.values():
        combined.update(counter)
    entries = [
        _entry_summary(entry, _histograms.get((entry.method, entry.name)))
        for entry in sorted(stats.entries.values(), key=lambda e: (e.name, e.method or ""))
    ]
    errors = sorted(
        (
            {"type": e.method, "name": e.name, "error": e.parse_error(e.error),
             "occurrences": e.occurrences}
            for e in stats.errors.values()
        ),
        key=lambda e: -e["occurrences"],
    )
    summary = {
        "entries": entries,
        "total": _entry_summary(stats.total, combined),
        "errors": errors,
        "histogram_requests": sum(combined.values()),
        "steps": steps(_samples),
        "peak_users": max((s[1] for s in _samples), default=environment.runner.user_count),
    }
    with open(path, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=2)
