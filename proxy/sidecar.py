"""The sidecar: two listeners of the one proxy engine, each with its own policy chain.

* inbound (mTLS unless configured off): server span -> identity/allow-list -> local service;
* outbound (loopback, plain: only the local service calls it): route by Host -> client span ->
  breaker -> retry/deadline -> callee sidecar (over mTLS).

`SidecarService` runs both on an event loop in a background thread (gatewatch.service.Service),
so embedded mode can host sidecars next to the other stages in one process. It runs a
`SidecarPlan` (plain dataclasses) and imports no pydantic itself: `gatewatch sidecar` validates the
YAML and runs the data plane in a fresh interpreter (`proxy.sidecar_main`) to keep its RSS down.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import TYPE_CHECKING

from prometheus_client import CollectorRegistry

from gatewatch.loopthread import LoopThread
from proxy import mtls
from proxy.admin import start_admin
from proxy.circuit import BreakerPolicy
from proxy.decisionstore import DecisionStore
from proxy.endpoints import endpoint_of
from proxy.identity import InboundIdentity
from proxy.policy import Policy, build_chain
from proxy.retrying import RetryPolicy
from proxy.server import HttpServer
from proxy.sidecar_metrics import SidecarMetrics, SidecarMetricsPolicy
from proxy.sidecar_plan import SidecarPlan
from proxy.sidecar_registry import Upstream, apply_decisions, build_registry
from proxy.sidecar_routing import LocalRoute, OutboundRoute
from proxy.sidecar_tracing import INSTRUMENTATION, ClientSpan
from proxy.spans import Tracer
from proxy.tracing import TracingPolicy, make_tracer
from proxy.upstream import Cluster, UpstreamCaller

# Smaller than the gateway's batches: a sidecar's RSS budget is 30 MB, and a 512-span batch is
# ~0.6 MB of request body and its copies while it is sent.
SIDECAR_EXPORT_BATCH = 32

if TYPE_CHECKING:  # validated configs come from pydantic; the data plane only sees SidecarPlan
    from gatewatch.settings import Settings
    from proxy.sidecar_config import SidecarConfig

log = logging.getLogger(__name__)

class SidecarService:
    """One sidecar beside one service; ports 0 pick free ones (see `inbound_port`/`outbound_port`)."""

    def __init__(
        self, config: SidecarConfig | SidecarPlan, settings: Settings | None = None,
        decisions: DecisionStore | None = None, tracer: Tracer | None = None,
        decisions_file: Path | None = None,
    ) -> None:
        if not isinstance(config, SidecarPlan):
            if settings is None:
                raise TypeError("a SidecarConfig needs the settings (host, ports, collector, control plane)")
            config = config.plan(settings)
        plan = self.plan = config
        self.name = f"sidecar[{plan.service}]"
        self.decisions = decisions if decisions is not None else DecisionStore()  # an empty store is falsy
        self._given_tracer = tracer
        self._own_tracer: Tracer | None = None  # the tracer this sidecar created (and shuts down)
        self._decisions_file = decisions_file or plan.decisions_file
        client_tls = mtls.client_context(plan.tls) if plan.tls else None
        self._server_tls = mtls.server_context(plan.tls) if plan.tls else None
        self.registry: dict[str, Upstream] = build_registry(plan, client_tls)
        self.metrics = SidecarMetrics(CollectorRegistry())
        self.metrics.watch_breakers(self.registry)
        self._runner = LoopThread(self.name, self._serve, self._shutdown)
        self._servers: list[HttpServer] = []
        self._callers: list[UpstreamCaller] = []

    @property
    def inbound_port(self) -> int:
        """The bound inbound port (after start)."""
        return self._servers[0].port

    @property
    def outbound_port(self) -> int:
        """The bound outbound port (after start)."""
        return self._servers[1].port

    @property
    def admin_port(self) -> int:
        """The bound admin port, /metrics and /healthz (after start)."""
        return self._servers[2].port

    def start(self) -> None:
        """Bind both listeners and start following decisions; returns once serving."""
        self._runner.start()
        log.info("%s: inbound %s:%d -> %s, outbound %s:%d (%s), admin %d", self.name, self.plan.host,
                 self.inbound_port, self.plan.forward_to, self.plan.host, self.outbound_port,
                 "mTLS" if self.plan.tls else "plain HTTP", self.admin_port)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drain in-flight requests (up to `timeout_s`), close listeners and upstream connections."""
        self._runner.stop(timeout_s)

    async def _serve(self) -> None:
        tracer = self._tracer()
        plan, host = self.plan, self.plan.host
        local_caller = UpstreamCaller()
        remote_caller = UpstreamCaller(add_forwarded=False)
        self._callers = [local_caller, remote_caller]
        # Without tracing the span policies are left out: `traceparent` passes through unchanged.
        inbound: list[Policy] = [
            SidecarMetricsPolicy(self.metrics, "in", peer_label=plan.tls is not None),
            *([TracingPolicy(tracer, lambda exchange: None)] if tracer else []),
            InboundIdentity(mtls.AllowList(plan.allow), plan.tls is not None, plan.trust_domain),
            LocalRoute(Cluster(plan.service, [endpoint_of(plan.forward_to)])),
        ]
        outbound: list[Policy] = [
            SidecarMetricsPolicy(self.metrics, "out"),
            OutboundRoute(plan.service, self.registry),
            *([ClientSpan(tracer)] if tracer else []),
            BreakerPolicy(),
            RetryPolicy(plan.max_body_bytes),
        ]
        self._servers = [
            HttpServer(build_chain(inbound, local_caller), host, plan.inbound.port, plan.inbound.limits,
                       ssl=self._server_tls, on_shed=self.metrics.shed_hook("in")),
            HttpServer(build_chain(outbound, remote_caller), host, plan.outbound.port, plan.outbound.limits,
                       on_shed=self.metrics.shed_hook("out")),
        ]
        for server in self._servers:
            await server.start()
        admin = await start_admin(self.metrics.registry, self._health, host, plan.admin_port, self.name,
                                  openmetrics=True)
        self._servers.append(admin)
        self._follow_decisions()

    def _health(self) -> dict[str, object]:
        return {
            "service": self.plan.service, "decisions": len(self.decisions),
            "decisions_version": self.decisions.version,
            "breakers": {upstream.edge: upstream.breaker.state.value for upstream in self.registry.values()},
        }

    def _tracer(self) -> Tracer | None:
        """Spans go to the given tracer, else to one of our own (service.name = this service); None
        when tracing is off."""
        if self._given_tracer is not None or not self.plan.tracing:
            return self._given_tracer
        self._own_tracer = make_tracer(
            self.plan.service, self.plan.collector_endpoint, INSTRUMENTATION, self.plan.sample_ratio,
            export_batch_size=SIDECAR_EXPORT_BATCH, on_outcome=self.metrics.span_outcome,
        )
        return self._own_tracer

    def _follow_decisions(self) -> None:
        # The store may be updated from another thread (embedded mode, tests): apply on our loop.
        self.decisions.subscribe(lambda store: self._runner.call_soon(apply_decisions, self.registry, store))
        apply_decisions(self.registry, self.decisions)
        if not (self.plan.control_plane_url or self._decisions_file):
            return
        from proxy.controlplane import decision_source  # imported only when decisions are followed

        source = decision_source(self.plan.control_plane_url, self.plan.control_token, self.decisions,
                                 self._decisions_file)
        if source is not None:
            self._runner.spawn(source.run())

    async def _shutdown(self, timeout_s: float) -> None:
        await asyncio.gather(*(server.stop(timeout_s) for server in self._servers), return_exceptions=True)
        for caller in self._callers:
            caller.close()
        if self._own_tracer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._own_tracer.shutdown)

