"""Live decisions read back from the `decisions` table, so a restarted detector neither drops nor
re-issues what it had decided: its keepers resume holding, renewing and releasing them."""

from __future__ import annotations

import logging
from datetime import datetime
from typing import TYPE_CHECKING

from pydantic import ValidationError

from detectors.features import ns
from gatewatch.decisions import Decision, DecisionKind

if TYPE_CHECKING:
    from clickhouse_connect.driver.client import Client

log = logging.getLogger(__name__)


def live_decisions_in_store(store: Client, db: str, now: datetime) -> list[Decision]:
    """The newest decision of each target, if it is still live at `now` and not a circuit_close."""
    # Renewals keep the id with a later CreatedAt, so the newest row per target is its current state;
    # a circuit_close newest means the open was already released.
    rows = store.query(f"""
SELECT argMax(Decision, CreatedAt) AS decision
FROM {db}.decisions
GROUP BY Scope, TargetKey
HAVING argMax(ExpiresAt, CreatedAt) > fromUnixTimestamp64Nano(%(now)s)
   AND argMax(Kind, CreatedAt) != %(close)s""", parameters={"now": ns(now), "close": DecisionKind.CIRCUIT_CLOSE.value})
    decisions = []
    for (text,) in rows.result_rows:
        try:
            decisions.append(Decision.model_validate_json(text))
        except ValidationError as exc:  # a row a newer writer stored: skip it rather than refuse to start
            log.warning("skipping a stored decision that does not parse: %s", exc.errors()[0]["msg"])
    return decisions
