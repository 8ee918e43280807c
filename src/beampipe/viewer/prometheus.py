"""``/metrics``: the run's metrics in the Prometheus text format, for facility monitoring.

Read at each scrape from the launcher's latest per-replica
:class:`~beampipe.runtime.metrics.NodeMetrics` (updated every 0.5 s by the nodes' progress
reports; a restarted replica's counts include those of its earlier processes) by a custom
collector of the ``prometheus_client`` library
(https://prometheus.github.io/client_python/collector/custom/). Every series has the labels
``pipeline``, ``node`` and ``replica``; the NodeMetrics field each one shows:

* counters: ``beampipe_messages_received_total`` (messages_in), ``_received_bytes_total``
  (bytes_in), ``_messages_sent_total`` (messages_out), ``_sent_bytes_total`` (bytes_out),
  ``_cpu_seconds_total`` (cpu_time), ``_corrupt_frames_total``, ``_skipped_messages_total``
  (skipped), ``_retries_total``, ``_incomplete_events_total``, ``_dropped_events_total``,
  ``_out_of_order_total``, ``_resent_total``, ``_duplicates_total``, ``_late_total``,
  ``_warnings_total``, ``_dropped_inputs_total`` (dropped), ``_nonfinite_values_total``
  (nonfinite);
* gauges: ``beampipe_in_flight_messages`` (in_flight), ``_in_flight_bytes``,
  ``_held_messages`` (held), ``_retained_messages`` (retained), ``_unacknowledged_messages``
  (unacknowledged);
* histograms: ``beampipe_process_time_seconds`` (process_time), ``beampipe_latency_seconds``
  (latency), with the buckets of :data:`BUCKETS` (every 5th edge of the node histograms: 4 per
  decade from 1 µs to 100 s, where the counts are exact) and ``_count``, but no ``_sum`` (the
  nodes keep none);
* per replica process: ``beampipe_replica_up`` (1 while it runs),
  ``beampipe_replica_restarts_total`` (the launcher's count; 0 if it keeps none),
  ``beampipe_replica_hung`` (1 while it is hung and waited for) and
  ``beampipe_replica_hangs_total`` (hangs found, :mod:`beampipe.launch.hangs`);
* per node (labels ``pipeline``, ``node``): ``beampipe_hung_replicas`` (its replicas hung now);
* info (NodeMetrics ``info``, what the node reported with :meth:`beampipe.Worker.report_info`):
  ``beampipe_node_info{pipeline, node, replica, key, value} 1`` per replica and key, in the
  info-metric style (the value is a label; the sample is always 1).

A field this version of NodeMetrics does not have is left out. The viewer adds
``beampipe_viewer_tap_messages_total{node, port}`` (messages it received through the taps) and
``beampipe_viewer_image_previews_total{node, port}`` (binned image previews it made).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import fields

from prometheus_client.core import (
    CollectorRegistry,
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector

from beampipe.launch.status import ALIVE, ReplicaStatus, RunStatus
from beampipe.runtime.metrics import EDGES, Histogram, NodeMetrics

BUCKET_STEP = 5
BUCKETS = EDGES[::BUCKET_STEP]
"""Upper bucket edges (s) of the exported histograms."""

_COUNTERS = (
    ("messages_received", "Messages received", "messages_in"),
    ("received_bytes", "Wire bytes received", "bytes_in"),
    ("messages_sent", "Messages sent on all output ports", "messages_out"),
    ("sent_bytes", "Wire bytes sent on all output ports", "bytes_out"),
    ("cpu_seconds", "CPU seconds (user + system) used by the process", "cpu_time"),
    ("corrupt_frames", "Received frame sequences that could not be decoded", "corrupt_frames"),
    ("skipped_messages", "Messages skipped after errors (on_error: skip)", "skipped"),
    ("retries", "Attempts repeated after a TransientError", "retries"),
    ("incomplete_events", "Events delivered with missing parts", "incomplete_events"),
    ("dropped_events", "Incomplete events dropped", "dropped_events"),
    ("out_of_order", "Messages let through out of order (reorder buffer full)", "out_of_order"),
    ("resent", "Items sent again to a restarted downstream replica", "resent"),
    ("duplicates", "Messages received twice after a redelivery and dropped", "duplicates"),
    ("late", "Messages that arrived after their stream had ended", "late"),
    ("warnings", "Warnings raised in the node (Python warnings, logging >= WARNING)", "warnings"),
    ("dropped_inputs", "Inputs the node dropped through Worker.dead_letter", "dropped"),
    ("nonfinite_values", "NaN and infinite values in the float arrays sent", "nonfinite"),
)
_GAUGES = (
    ("in_flight_messages", "Messages sent downstream and not yet processed", "in_flight"),
    ("in_flight_bytes", "Wire bytes of the messages in flight", "in_flight_bytes"),
    ("held_messages", "Messages received and not yet processed", "held"),
    ("retained_messages", "Items sent and not yet acknowledged (kept to resend)", "retained"),
    ("unacknowledged_messages", "Input items received and not yet acknowledged", "unacknowledged"),
)
_HISTOGRAMS = (
    ("process_time_seconds", "Seconds in the worker's process() per message", "process_time"),
    ("latency_seconds", "Seconds from the source's timestamp to receipt", "latency"),
)
_LABELS = ["pipeline", "node", "replica"]
_FIELDS = {f.name for f in fields(NodeMetrics)}
"""Counters of the table that this version of NodeMetrics does not have are left out."""


def buckets(h: Histogram) -> list[tuple[str, float]]:
    """Cumulative ``(le, count)`` pairs of ``h`` at :data:`BUCKETS`, then ``+Inf``."""
    out = []
    seen = 0
    for i, n in enumerate(h.counts[: len(EDGES)]):
        seen += n
        if i % BUCKET_STEP == 0:
            out.append((repr(EDGES[i]), float(seen)))
    out.append(("+Inf", float(h.total)))
    return out


class RunCollector(Collector):
    """Collects the metrics of a run's replicas and of the viewer at each scrape.

    Args:
        name: the pipeline's name (label ``pipeline``).
        status: returns the launcher's latest :class:`~beampipe.launch.status.RunStatus`, or
            None before there is one.
        viewer_counts: returns ``{(node, port): (tap messages, image previews, ...)}``.
    """

    def __init__(
        self,
        name: str,
        status: Callable[[], RunStatus | None],
        viewer_counts: Callable[[], dict[tuple[str, str], tuple[int, ...]]],
    ) -> None:
        self.name = name
        self.status = status
        self.viewer_counts = viewer_counts

    def collect(self) -> Iterator[Metric]:
        status = self.status()
        replicas = sorted(status.replicas if status else (), key=lambda r: (r.node, r.replica))
        metrics = {(r.node, r.replica): r.metrics for r in replicas}
        keys = list(metrics)
        for short, doc, attr in _COUNTERS:
            if attr not in _FIELDS:
                continue
            family = CounterMetricFamily(f"beampipe_{short}", doc, labels=_LABELS)
            for node, r in keys:
                family.add_metric([self.name, node, str(r)], getattr(metrics[node, r], attr))
            yield family
        for short, doc, attr in _GAUGES:
            if attr not in _FIELDS:
                continue
            gauge = GaugeMetricFamily(f"beampipe_{short}", doc, labels=_LABELS)
            for node, r in keys:
                gauge.add_metric([self.name, node, str(r)], getattr(metrics[node, r], attr))
            yield gauge
        for short, doc, attr in _HISTOGRAMS:
            hist = HistogramMetricFamily(f"beampipe_{short}", doc, labels=_LABELS)
            for node, r in keys:
                labels = [self.name, node, str(r)]
                h = getattr(metrics[node, r], attr)
                hist.add_metric(labels, buckets(h), None)
                # Without a sum the library writes no _count: write it (= the +Inf bucket).
                named = dict(zip(_LABELS, labels, strict=True))
                hist.add_sample(f"beampipe_{short}_count", named, float(h.total))
            yield hist
        up = GaugeMetricFamily("beampipe_replica_up", "1 while the process runs", labels=_LABELS)
        restarts = CounterMetricFamily(
            "beampipe_replica_restarts", "Restarts of the replica's process", labels=_LABELS
        )
        hung = GaugeMetricFamily(
            "beampipe_replica_hung", "1 while the replica is hung and waited for", labels=_LABELS
        )
        hangs = CounterMetricFamily(
            "beampipe_replica_hangs", "Hangs of the replica's processes found", labels=_LABELS
        )
        per_node: dict[str, int] = {}
        for rep in replicas:
            labels = [self.name, rep.node, str(rep.replica)]
            up.add_metric(labels, 1.0 if rep.state in ALIVE else 0.0)
            restarts.add_metric(labels, float(rep.restarts))
            hung.add_metric(labels, 1.0 if rep.state == "hung" else 0.0)
            hangs.add_metric(labels, float(rep.hangs))
            per_node[rep.node] = per_node.get(rep.node, 0) + (rep.state == "hung")
        yield up
        yield restarts
        yield hung
        yield hangs
        nodes = GaugeMetricFamily(
            "beampipe_hung_replicas", "Replicas of the node hung now", labels=["pipeline", "node"]
        )
        for node, n in per_node.items():
            nodes.add_metric([self.name, node], float(n))
        yield nodes
        yield _info(self.name, replicas)
        counts = self.viewer_counts()
        tap = CounterMetricFamily(
            "beampipe_viewer_tap_messages",
            "Messages the viewer received through the node's tap",
            labels=["pipeline", "node", "port"],
        )
        images = CounterMetricFamily(
            "beampipe_viewer_image_previews",
            "Binned image previews the viewer made",
            labels=["pipeline", "node", "port"],
        )
        for (node, port), (messages, binned, *_) in sorted(counts.items()):
            tap.add_metric([self.name, node, port], messages)
            images.add_metric([self.name, node, port], binned)
        yield tap
        yield images


def _info(pipeline: str, replicas: list[ReplicaStatus]) -> InfoMetricFamily:
    """``beampipe_node_info``: a sample per replica and key of its info."""
    info = InfoMetricFamily(
        "beampipe_node", "What the node reported about itself (report_info)", labels=_LABELS
    )
    for rep in replicas:
        for key, value in rep.metrics.info.items():
            info.add_metric([pipeline, rep.node, str(rep.replica)], {"key": key, "value": value})
    return info


def registry(collector: RunCollector) -> CollectorRegistry:
    """A registry of its own holding only ``collector`` (not the process-wide default one)."""
    reg = CollectorRegistry(auto_describe=False)
    reg.register(collector)
    return reg
