"""Prometheus metrics of the daemon, one registry per running pipeline.

Stages get a :class:`Metrics` object in their constructor and count into it;
nothing logs per frame. A private ``CollectorRegistry`` (not the global
default) lets tests run several pipelines in one process.
"""

from __future__ import annotations

import asyncio

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    ProcessCollector,
    generate_latest,
)

_LATENCY_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.035, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3,
                    0.5, 0.75, 1.0, 2.0)


class Metrics:
    """Every metric the daemon exports; label ``stream`` is the stream id.

    Attributes
    ----------
    stage_latency : Histogram
        Seconds from capture to the end of a stage; labels ``stream``, ``stage``
        (``decode``, ``detect``, ``track``, ``annotate``, ``send``).
    frames : Counter
        Frames through a stage; labels ``stream``, ``stage``.
    drops : Counter
        Frames dropped; labels ``stream``, ``cause`` (``decode_slot``,
        ``detect_skipped``, ``view_slot``, ``camera``).
    decode_errors : Counter
        Corrupt packets/frames skipped; label ``stream``.
    reconnects : Counter
        Source reconnect attempts; label ``stream``.
    source_up : Gauge
        1 while the stream delivers frames, else 0; label ``stream``.
    fps : Gauge
        Frames per second delivered by the source over the last seconds.
    detect_rate : Gauge
        Detections per second per stream (the scheduler lowers it under load).
    detect_rate_limit : Gauge
        The per-stream rate the load controller allows now
        (``detector.min_rate_hz`` .. ``max_rate_hz``).
    video_loss : Gauge
        Share of its frames the worst stream's video path dropped in the last
        window (``decode_slot`` and ``view_slot`` drops over frames decoded).
    late_detections : Counter
        Detections that came back after their frame had gone out and were
        applied, shifted along their tracks, to a later frame; label ``stream``.
    detect_batch : Histogram
        Frames per detector call.
    detect_seconds : Histogram
        Wall time of one detector call (preprocess + inference + decode).
    peers : Gauge
        Connected WebRTC peers; label ``stream``.
    tracks : Gauge
        Live tracks; label ``stream``.
    bills_committed : Counter
        Bills written to the journal (first time only); label ``stream``.
    bill_commit_seconds : Histogram
        Wall time of one journal commit (SQLite, fsync included).
    bills_pending : Gauge
        Closed bills waiting for their commit (non-zero only while the journal fails).
    journal_errors : Counter
        Failed journal operations; label ``op`` (``commit``, ``read``, ``correct``).
    sse_subscribers : Gauge
        Open ``GET /api/events`` streams.
    fleet_outbox_depth : Gauge
        Outbox messages not yet acknowledged by the MQTT broker.
    fleet_published : Counter
        Outbox messages the broker acknowledged (``PUBACK``), re-sends
        included; label ``kind`` (``bill``, ``correction``).
    fleet_broker_connected : Gauge
        1 while connected to the MQTT broker, else 0.
    fleet_connection_errors : Counter
        Failed connection attempts and lost connections to the broker.
    heap_trim_seconds : Histogram
        Wall time of one return of freed heap memory to the system
        (:mod:`edge.memory`, every 10 s; it runs in a worker thread).
    model_errors, model_serving, model_swaps : Counter, Gauge, Counter
        Model calls that raised; the serving model; swaps by cause
        (``promote``, ``rollback``, ``auto_rollback``).
    shadow_bills, shadow_compared, shadow_agreement, shadow_detect_seconds
        The shadowed candidate's bills, their comparison with the serving
        model's (``outcome``: ``agree``, ``differ``, ``missed``, ``extra``),
        its agreement and its call time.
    asyncio_tasks : Gauge
        Tasks of the event loop that renders the metrics (``GET /metrics``);
        NaN when rendered outside a running loop. With the ``process_*``
        metrics (resident memory, open file descriptors, CPU seconds; Linux)
        it shows leaks in a soak run (``bench/soak.py``).
    """

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.stage_latency = Histogram(
            "dishtracker_stage_latency_seconds", "Capture to end of stage",
            ["stream", "stage"], buckets=_LATENCY_BUCKETS, registry=r)
        self.frames = Counter("dishtracker_frames", "Frames through a stage",
                              ["stream", "stage"], registry=r)
        self.drops = Counter("dishtracker_frame_drops", "Frames dropped, by cause",
                             ["stream", "cause"], registry=r)
        self.decode_errors = Counter("dishtracker_decode_errors", "Corrupt input skipped",
                                     ["stream"], registry=r)
        self.reconnects = Counter("dishtracker_source_reconnects", "Reconnect attempts",
                                  ["stream"], registry=r)
        self.source_up = Gauge("dishtracker_source_up", "1 while delivering frames",
                               ["stream"], registry=r)
        self.fps = Gauge("dishtracker_stream_fps", "Delivered frames per second",
                         ["stream"], registry=r)
        self.detect_rate = Gauge("dishtracker_detection_rate_hz", "Detections per second",
                                 ["stream"], registry=r)
        self.detect_rate_limit = Gauge(
            "dishtracker_detection_rate_limit_hz",
            "The per-stream detection rate the load controller allows now", registry=r)
        self.video_loss = Gauge(
            "dishtracker_video_loss_ratio",
            "Share of frames the video path dropped in the last window (worst stream)",
            registry=r)
        self.detect_batch = Histogram("dishtracker_detect_batch_size", "Frames per call",
                                      buckets=(1, 2, 3, 4, 6, 8, 12, 16), registry=r)
        self.detect_seconds = Histogram("dishtracker_detect_seconds", "Detector call time",
                                        buckets=_LATENCY_BUCKETS, registry=r)
        self.peers = Gauge("dishtracker_webrtc_peers", "Connected WebRTC peers",
                           ["stream"], registry=r)
        self.late_detections = Counter(
            "dishtracker_late_detections", "Detections applied to a later frame than their own",
            ["stream"], registry=r)
        self.tracks = Gauge("dishtracker_tracks", "Live tracks", ["stream"], registry=r)
        self.bills_committed = Counter("dishtracker_bills_committed", "Bills journaled",
                                       ["stream"], registry=r)
        self.bill_commit_seconds = Histogram(
            "dishtracker_bill_commit_seconds", "Journal commit time (fsync included)",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.bills_pending = Gauge("dishtracker_bills_pending", "Bills waiting for their commit",
                                   registry=r)
        self.journal_errors = Counter("dishtracker_journal_errors", "Failed journal operations",
                                      ["op"], registry=r)
        self.sse_subscribers = Gauge("dishtracker_sse_subscribers", "Open event streams",
                                     registry=r)
        self.fleet_outbox_depth = Gauge(
            "dishtracker_fleet_outbox_depth", "Outbox messages not yet acknowledged by the broker",
            registry=r)
        self.fleet_published = Counter(
            "dishtracker_fleet_published", "Outbox messages acknowledged by the broker",
            ["kind"], registry=r)
        self.fleet_broker_connected = Gauge(
            "dishtracker_fleet_broker_connected", "1 while connected to the MQTT broker",
            registry=r)
        self.fleet_connection_errors = Counter(
            "dishtracker_fleet_connection_errors", "Failed or lost MQTT broker connections",
            registry=r)
        self.model_errors = Counter(
            "dishtracker_model_errors", "Detector calls that raised, by model version",
            ["version"], registry=r)
        self.model_serving = Gauge(
            "dishtracker_model_serving", "1 for the model that serves the streams",
            ["id", "version"], registry=r)
        self.model_swaps = Counter(
            "dishtracker_model_swaps", "Models put into service, by why",
            ["cause"], registry=r)
        self.shadow_bills = Counter(
            "dishtracker_shadow_bills", "Bills the shadowed candidate closed", ["id"],
            registry=r)
        self.shadow_compared = Counter(
            "dishtracker_shadow_compared", "Serving and shadow bills compared, by outcome",
            ["id", "outcome"], registry=r)
        self.shadow_agreement = Gauge(
            "dishtracker_shadow_agreement_ratio",
            "Share of compared bills on which the candidate agrees with the serving model",
            ["id"], registry=r)
        self.shadow_detect_seconds = Histogram(
            "dishtracker_shadow_detect_seconds", "The shadowed candidate's call time",
            buckets=_LATENCY_BUCKETS, registry=r)
        self.heap_trim_seconds = Histogram(
            "dishtracker_heap_trim_seconds", "Wall time of one heap trim (malloc_trim)",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25), registry=r)
        self.unknown_lines = Counter(
            "dishtracker_unknown_lines", "Bill lines billed as unknown dishes (docs/LEARNING.md)",
            ["stream"], registry=r)
        self.learning_examples = Gauge(
            "dishtracker_learning_examples", "The site's examples the serving model uses",
            registry=r)
        self.learning_effect_seconds = Histogram(
            "dishtracker_learning_effect_seconds",
            "A stored correction to its examples naming dishes", buckets=_LATENCY_BUCKETS,
            registry=r)
        self.asyncio_tasks = Gauge("dishtracker_asyncio_tasks", "Tasks of the event loop",
                                   registry=r)
        self.asyncio_tasks.set_function(_loop_tasks)
        ProcessCollector(registry=r)

    def value(self, name: str, **labels: str) -> float:
        """Current value of sample ``name`` with ``labels`` (0 when never set)."""
        v = self.registry.get_sample_value(name, labels)
        return 0.0 if v is None else float(v)

    def render(self) -> bytes:
        """The text exposition format for ``GET /metrics``."""
        return generate_latest(self.registry)


def _loop_tasks() -> float:
    """Tasks of the running event loop, read when the registry is rendered."""
    try:
        return float(len(asyncio.all_tasks()))
    except RuntimeError:  # rendered outside the loop's thread: no loop to ask
        return float("nan")
