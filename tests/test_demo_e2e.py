"""The whole loop on the shortened scenario, through real Kafka and chDB: bots limited, circuits opened."""

from __future__ import annotations

import socket
import threading
from urllib.parse import urlsplit

import pytest
from rich.console import Console

from demo.groundtruth import load_truth
from demo.runner import DemoRun
from demo.scenario import get_scenario
from gatewatch.store import connect
from tests.conftest import STORE_DSN


@pytest.mark.kafka
@pytest.mark.slow
@pytest.mark.timeout(240)
def test_short_scenario_end_to_end_through_kafka(kafka_settings, tmp_path):
    threads_before = {t.ident for t in threading.enumerate()}
    console = Console(file=(tmp_path / "console.txt").open("w"), width=120)
    result = DemoRun(kafka_settings, get_scenario("short"), console, tmp_path / "report.html").run()
    summary = result.summary

    # Traffic went gateway -> sidecars -> collector -> Kafka -> pipeline -> chDB.
    assert summary.requests > 200
    assert summary.spans > summary.requests  # sidecar and service spans besides the gateway's
    assert {"gateway", "checkout", "payment", "catalog"} <= set(summary.services)
    # The numbers come from the store: ground truth, decisions and spans.
    [bot] = summary.bots
    assert bot.label == "fast_scraper" and bot.flagged_ms is not None
    assert bot.limited_share is not None and bot.limited_share > 0.5
    [fault] = summary.faults
    assert fault.edge == "checkout->payment" and fault.opened_ms is not None
    assert fault.opened_ms >= fault.start_ms
    assert summary.bots_limited == 1 and summary.circuits_opened == 1
    assert summary.report_path and (tmp_path / "report.html").stat().st_size > 1000

    client = connect(STORE_DSN)
    truth = load_truth(client, kafka_settings.database, result.run_id)
    assert {r.kind for r in truth} == {"bot", "fault", "human"}

    # Nothing it started is left running: the gateway port is closed, no new non-daemon threads.
    address = urlsplit(result.gateway_url)
    with pytest.raises(OSError):
        socket.create_connection((address.hostname, address.port), timeout=1).close()
    leftover = [t for t in threading.enumerate() if t.ident not in threads_before and not t.daemon]
    assert not leftover, leftover
    client.command(f"DROP DATABASE IF EXISTS {kafka_settings.database}")
