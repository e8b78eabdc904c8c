"""One trace across gateway -> sidecar -> service -> sidecar -> sidecar -> service, exported over
real OTLP/HTTP, with the right parent links, span kinds and attributes."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

from gatewatch.settings import Settings
from proxy.gateway import GatewayService
from proxy.gatewayconfig import GatewayConfig
from tests.test_sidecar_support import Backend, running_backend, running_sidecar

pytestmark = pytest.mark.timeout(90)

TRACING_ON = {"tracing": {"enabled": True}}
KINDS = {1: "internal", 2: "server", 3: "client"}


@dataclass
class Span:
    service: str
    name: str
    kind: str
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, Any]


@dataclass
class Receiver:
    url: str = ""
    spans: list[Span] = field(default_factory=list)


@contextmanager
def otlp_receiver() -> Iterator[Receiver]:
    """A minimal OTLP/HTTP (protobuf) trace receiver on 127.0.0.1."""
    receiver = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            request = ExportTraceServiceRequest.FromString(self.rfile.read(int(self.headers["content-length"])))
            for resource_spans in request.resource_spans:
                service = next(a.value.string_value for a in resource_spans.resource.attributes
                               if a.key == "service.name")
                for scope in resource_spans.scope_spans:
                    for span in scope.spans:
                        receiver.spans.append(Span(
                            service, span.name, KINDS.get(span.kind, "?"), span.trace_id.hex(), span.span_id.hex(),
                            span.parent_span_id.hex(),
                            {a.key: _value(a.value) for a in span.attributes},
                        ))
            self.send_response(200)
            self.send_header("content-length", "0")
            self.end_headers()

        def log_message(self, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    receiver.url = f"http://127.0.0.1:{server.server_address[1]}"
    threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
    try:
        yield receiver
    finally:
        server.shutdown()
        server.server_close()


def _value(value: Any) -> Any:
    return getattr(value, value.WhichOneof("value")) if value.WhichOneof("value") else None


def calls_payment(outbound_port: list[int]) -> Any:
    """Behaviour of the checkout service: call payment through its sidecar, passing the trace on."""

    def behaviour(backend: Backend, handler: BaseHTTPRequestHandler) -> tuple[int, bytes]:
        headers = {"host": "payment", "traceparent": handler.headers["traceparent"]}
        answer = httpx.get(f"http://127.0.0.1:{outbound_port[0]}/charge", headers=headers, timeout=10)
        return answer.status_code, b"paid"

    return behaviour


def test_spans_form_one_trace_across_gateway_and_sidecars(settings: Settings) -> None:
    outbound: list[int] = []
    with otlp_receiver() as receiver:
        settings = settings.model_copy(update={"otlp_endpoint": receiver.url})
        with (
            running_backend() as payment,
            running_sidecar("payment", payment.port, settings, config=TRACING_ON) as payment_sidecar,
            running_backend(behaviour=calls_payment(outbound)) as checkout,
            running_sidecar("checkout", checkout.port, settings, {"payment": [payment_sidecar.inbound_port]},
                            config=TRACING_ON) as checkout_sidecar,
        ):
            outbound.append(checkout_sidecar.outbound_port)
            gateway = GatewayService(GatewayConfig.model_validate({
                "listen_port": 0, "admin_port": 0,
                "upstreams": {"checkout": {"endpoints": [f"127.0.0.1:{checkout_sidecar.inbound_port}"]}},
                "routes": [{"name": "shop", "match": {"prefix": "/"}, "upstream": "checkout"}],
            }), settings)
            gateway.start()
            try:
                response = httpx.get(f"http://127.0.0.1:{gateway.port}/buy", timeout=10)
            finally:
                gateway.stop(timeout_s=2.0)
            assert response.status_code == 200 and response.text == "paid"
        # Every component flushed its spans when it stopped.

    spans = receiver.spans
    assert len({span.trace_id for span in spans}) == 1, spans
    by_id = {span.span_id: span for span in spans}
    edge = {(span.service, span.kind): span for span in spans}
    gateway_span = edge[("gateway", "server")]
    checkout_in = edge[("checkout", "server")]
    checkout_out = edge[("checkout", "client")]
    payment_in = edge[("payment", "server")]
    assert len(spans) == 4
    assert gateway_span.parent_id == ""
    assert by_id[checkout_in.parent_id] is gateway_span
    assert by_id[checkout_out.parent_id] is checkout_in  # through the checkout service's forwarded traceparent
    assert by_id[payment_in.parent_id] is checkout_out
    assert checkout_out.attributes["peer.service"] == "payment"
    assert checkout_out.attributes["server.address"] == "payment"
    assert checkout_out.attributes["gatewatch.breaker.state"] == "closed"
    assert checkout_out.attributes["http.response.status_code"] == 200
    assert checkout_out.attributes["network.peer.port"] == payment_sidecar.inbound_port
    assert payment_in.attributes["gatewatch.caller"] == "checkout"
    assert payment_in.attributes["url.path"] == "/charge"
    # The local services saw the sidecar's span as their parent.
    assert checkout.seen[-1]["traceparent"].split("-")[2] == checkout_in.span_id
    assert payment.seen[-1]["traceparent"].split("-")[2] == payment_in.span_id


def test_retry_count_recorded_on_client_span(settings: Settings) -> None:
    with otlp_receiver() as receiver:
        settings = settings.model_copy(update={"otlp_endpoint": receiver.url})
        with (
            running_backend(status=503) as bad,
            running_backend() as good,
            running_sidecar("checkout", 1, settings, {"payment": [bad.port, good.port]}, config=TRACING_ON) as sidecar,
        ):
            response = httpx.get(f"http://127.0.0.1:{sidecar.outbound_port}/", headers={"host": "payment"}, timeout=10)
            assert response.status_code == 200
    (client,) = [span for span in receiver.spans if span.kind == "client"]
    assert client.attributes["http.request.resend_count"] == 1
    assert client.attributes["network.peer.port"] == good.port
