"""Prometheus metrics of the detectors (served by the control plane's /metrics)."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

CYCLE_SECONDS = Histogram("gatewatch_detectors_cycle_seconds", "Duration of one detection cycle",
                          buckets=(0.05, 0.1, 0.25, 0.5, 1, 2, 5, 10))
CYCLE_ERRORS = Counter("gatewatch_detectors_cycle_errors_total", "Detection cycles that failed")
DECISIONS = Counter("gatewatch_detectors_decisions_total", "Decisions published (new or renewed)",
                    ["kind", "mode"])
FLAGGED_CLIENTS = Gauge("gatewatch_detectors_flagged_clients", "Clients with a live bot decision")
EDGE_SPIKES = Gauge("gatewatch_detectors_edge_spikes", "Edges with a live spike")
CLIENTS_SCORED = Gauge("gatewatch_detectors_clients_scored", "Clients scored in the last cycle")
