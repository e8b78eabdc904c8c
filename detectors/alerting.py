"""Alerts for people: Prometheus Alertmanager v2, a generic JSON webhook, and the `alerts` table.

`Alerter.sync` takes the alerts that should be firing now. New ones fire, missing ones resolve
(Alertmanager learns it from `endsAt`), and nothing is sent twice for the same state: the webhook
and the table see state changes only. Alertmanager also gets firing alerts again every
`resend_s`, as Prometheus does, so its own timeout never resolves a live alert. A receiver that is
down keeps its pending notifications (bounded) and gets them on the next sync.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx

from gatewatch.alerts import Alert

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)
MAX_PENDING = 1000
ALERT_COLUMNS = ["Fingerprint", "Name", "Severity", "Labels", "Annotations", "StartsAt", "EndsAt",
                 "DecisionId", "UpdatedAt"]


class Receiver(Protocol):
    """Something that takes alert notifications; raises on delivery failure."""

    name: str

    def send(self, alerts: Sequence[Alert]) -> None:
        """Deliver these alerts (firing or resolved)."""


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


class AlertmanagerReceiver:
    """POST /api/v2/alerts of a Prometheus Alertmanager (or anything speaking its API)."""

    name = "alertmanager"

    def __init__(self, base_url: str, timeout_s: float = 5.0) -> None:
        self.url = base_url.rstrip("/") + "/api/v2/alerts"
        self.timeout_s = timeout_s

    def send(self, alerts: Sequence[Alert]) -> None:
        """One POST with every alert in Alertmanager's postable form."""
        body = []
        for alert in alerts:
            item: dict[str, Any] = {
                "labels": {"alertname": alert.name, "severity": alert.severity.value, **alert.labels},
                "annotations": dict(alert.annotations),
                "startsAt": _rfc3339(alert.starts_at),
            }
            if alert.ends_at:
                item["endsAt"] = _rfc3339(alert.ends_at)
            body.append(item)
        httpx.post(self.url, json=body, timeout=self.timeout_s).raise_for_status()


class WebhookReceiver:
    """A generic JSON webhook: `{"status": "firing"|"resolved", "alert": {...}}` per state change."""

    name = "webhook"

    def __init__(self, url: str, timeout_s: float = 5.0) -> None:
        self.url = url
        self.timeout_s = timeout_s

    def send(self, alerts: Sequence[Alert]) -> None:
        """One POST per alert state change."""
        for alert in alerts:
            payload = {"status": "resolved" if alert.resolved else "firing", "alert": alert.model_dump(mode="json")}
            httpx.post(self.url, json=payload, timeout=self.timeout_s).raise_for_status()


class StoreReceiver:
    """The `alerts` table: one row per state change (ReplacingMergeTree keeps the latest)."""

    name = "store"

    def __init__(self, store: Client, database: str) -> None:
        self.store, self.table = store, f"{database}.alerts"

    def send(self, alerts: Sequence[Alert]) -> None:
        """Insert one row per alert."""
        rows = [[a.fingerprint, a.name, a.severity.value, a.labels, a.annotations, a.starts_at, a.ends_at,
                 a.decision_id, a.ends_at or a.starts_at] for a in alerts]
        self.store.insert(self.table, rows, column_names=ALERT_COLUMNS)


class Alerter:
    """Keeps the firing set and tells receivers about changes, deduplicated."""

    def __init__(self, receivers: Sequence[Receiver], resend_s: float = 60.0) -> None:
        self.receivers = list(receivers)
        self.resend_s = resend_s
        self.firing: dict[str, Alert] = {}
        self._pending: dict[str, list[Alert]] = {r.name: [] for r in self.receivers}
        self._last_resend: datetime | None = None

    def sync(self, should_fire: Sequence[Alert], now: datetime) -> list[Alert]:
        """Fire new alerts, resolve vanished ones; returns the state changes."""
        wanted = {a.fingerprint: a for a in should_fire}
        changes = [a for fp, a in wanted.items() if fp not in self.firing]
        for fp in [fp for fp in self.firing if fp not in wanted]:
            changes.append(self.firing.pop(fp).model_copy(update={"ends_at": now}))
        self.firing.update({a.fingerprint: a for a in changes if not a.resolved})
        resend = self._last_resend is None or (now - self._last_resend).total_seconds() >= self.resend_s
        for receiver in self.receivers:
            batch = self._pending[receiver.name] + changes
            if receiver.name == "alertmanager" and resend:
                fresh = {a.fingerprint for a in batch}
                batch += [a for a in self.firing.values() if a.fingerprint not in fresh]
            self._deliver(receiver, batch)
        if resend:
            self._last_resend = now
        return changes

    def _deliver(self, receiver: Receiver, batch: list[Alert]) -> None:
        if not batch:
            return
        try:
            receiver.send(batch)
            self._pending[receiver.name] = []
        except Exception as exc:
            log.warning("alert receiver %s failed (%s); will retry", receiver.name, type(exc).__name__)
            self._pending[receiver.name] = batch[-MAX_PENDING:]


def receivers_for(alertmanager_url: str, webhook_url: str, store: Client | None, database: str) -> list[Receiver]:
    """The configured receivers (the store always, when there is one)."""
    out: list[Receiver] = []
    if store is not None:
        out.append(StoreReceiver(store, database))
    if alertmanager_url:
        out.append(AlertmanagerReceiver(alertmanager_url))
    if webhook_url:
        out.append(WebhookReceiver(webhook_url))
    return out
