"""Gateway mode: the engine with the chain metrics -> tracing -> routing -> auth -> access -> upstream,
an admin port (/metrics, /healthz), decisions from the control plane, and config hot reload."""

from __future__ import annotations

import asyncio
import logging
import os
from pathlib import Path

from prometheus_client import CollectorRegistry

from gatewatch.errors import ConfigError
from gatewatch.loopthread import LoopThread
from gatewatch.settings import Settings
from proxy import mtls
from proxy.admin import start_admin
from proxy.auth import Authenticator, build_authenticator
from proxy.controlplane import DecisionSource, decision_source
from proxy.decisionstore import DecisionStore
from proxy.endpoints import endpoint_of
from proxy.gatewayconfig import GatewayConfig, RateLimitConfig, UpstreamConfig, listen_ports, load_gateway_config
from proxy.gatewaypolicies import AccessPolicy, AuthPolicy
from proxy.metrics import GatewayMetrics, MetricsPolicy
from proxy.policy import Policy, build_chain
from proxy.ratelimit import Gcra
from proxy.routing import Route, Router, RoutingPolicy, http_route_of, make_route
from proxy.server import HttpServer, ServerLimits
from proxy.sharedlimits import SharedTatTable
from proxy.spans import Tracer
from proxy.tracing import TracingPolicy, make_tracer
from proxy.upstream import Cluster, ConnectionPool, Endpoint, UpstreamCaller

log = logging.getLogger(__name__)

METRICS_FLUSH_S = 1.0  # per-request counts reach /metrics of other workers at most this late


def server_limits(config: GatewayConfig) -> ServerLimits:
    """Listener limits from the config."""
    limits = config.limits
    return ServerLimits(
        max_header_bytes=limits.max_header_bytes, header_timeout_s=limits.header_timeout_s,
        body_timeout_s=limits.body_timeout_s, idle_timeout_s=limits.idle_timeout_s,
        max_inflight=limits.max_inflight, max_connections=limits.max_connections, retry_after_s=limits.retry_after_s,
    )


class _Compiled:
    """Everything a config turns into: routes (with their policies' settings) and authenticators."""

    def __init__(self, config: GatewayConfig, previous: _Compiled | None, shared: SharedTatTable | None) -> None:
        self.config = config
        self.shared = shared
        self.clusters = {
            name: Cluster(
                name, _endpoints(name, upstream), upstream.max_failures, upstream.eject_s, upstream.connect_timeout_s,
            )
            for name, upstream in config.upstreams.items()
        }
        self.authenticators: dict[str, Authenticator] = {
            name: build_authenticator(provider) for name, provider in config.auth.items()
        }
        old_limiters = previous.limiters if previous is not None else {}
        self.limiters: dict[str, Gcra] = {}
        routes: list[Route] = []
        for spec in config.routes:
            match = spec.match
            route = make_route(
                spec.name, self.clusters[spec.upstream], spec.timeout_s,
                spec.max_body_bytes if spec.max_body_bytes is not None else config.limits.max_body_bytes,
                prefix=match.prefix, path=match.path, pattern=match.pattern, methods=match.methods,
                host=match.host, strip_prefix=spec.strip_prefix,
            )
            if spec.auth is not None:
                route.policy["auth"] = (self.authenticators[spec.auth.provider], frozenset(spec.auth.scopes))
            limits: list[tuple[Gcra, str]] = []
            named = config.rate_limits[spec.rate_limit] if isinstance(spec.rate_limit, str) else spec.rate_limit
            if named is not None:
                limits.append((self._limiter(f"{spec.name}:key", named, old_limiters), named.key))
            if spec.route_limit is not None:
                limits.append((self._limiter(f"{spec.name}:route", spec.route_limit, old_limiters), "route"))
            route.policy["rate_limits"] = limits
            routes.append(route)
        self.router = Router(routes)

    def _limiter(self, name: str, spec: RateLimitConfig, old: dict[str, Gcra]) -> Gcra:
        """Keep a limiter's state across reloads when its parameters did not change."""
        limiter = old.get(name)
        if limiter is None or not limiter.same_shape(spec.rate_per_s, spec.burst):
            limiter = Gcra(spec.rate_per_s, spec.burst, shared=self.shared, name=name)
        self.limiters[name] = limiter
        return limiter

    async def start(self) -> None:
        for authenticator in self.authenticators.values():
            await authenticator.start()

    async def close(self) -> None:
        for authenticator in self.authenticators.values():
            await authenticator.close()


def _endpoints(name: str, upstream: UpstreamConfig) -> list[Endpoint]:
    """An upstream's endpoints; with `tls`, over mTLS to a peer that proves the expected identity."""
    tls = upstream.tls
    if tls is None:
        return [endpoint_of(address) for address in upstream.endpoints]
    context = mtls.client_context(mtls.TlsFiles(tls.ca, tls.cert, tls.key))  # ConfigError on unusable files
    return [endpoint_of(address, tls.server_name or name, context) for address in upstream.endpoints]


class GatewayService:
    """The gateway as a gatewatch Service: its own event loop thread, listener and admin port.

    As one of several worker processes (`proxy.workers`), `worker` is its index and `shared` the
    rate-limit state all of them use; both ports are then bound with SO_REUSEPORT.
    """

    name = "gateway"

    def __init__(self, config: Path | GatewayConfig, settings: Settings, worker: int | None = None,
                 shared: SharedTatTable | None = None) -> None:
        self.settings = settings
        self.worker = worker
        self.shared = shared
        self.config_path = config if isinstance(config, Path) else None
        self.config = load_gateway_config(config) if isinstance(config, Path) else config
        self.registry = CollectorRegistry()
        self.metrics = GatewayMetrics(self.registry)
        self.decisions = DecisionStore()
        self.port = 0
        self.admin_port = 0
        self.config_version = 1
        self._runner = LoopThread("gatewatch-gateway", self._serve, self._shutdown)
        self._compiled: _Compiled | None = None
        self._routing: RoutingPolicy | None = None
        self._server: HttpServer | None = None
        self._admin: HttpServer | None = None
        keepalive = self.config.upstream_keepalive
        self._caller = UpstreamCaller(ConnectionPool(keepalive.max_idle_per_endpoint, keepalive.idle_timeout_s))
        self._tracer: Tracer | None = None
        self._config_mtime = self._mtime()

    # Service protocol
    def start(self) -> None:
        """Start the loop thread; returns once both listeners are bound."""
        self._runner.start()
        log.info("gateway listening on %s:%d (admin %d)", self.settings.host, self.port, self.admin_port)

    def stop(self, timeout_s: float = 10.0) -> None:
        """Drain in-flight requests (up to the config's drain timeout) and stop."""
        self._runner.stop(drain_s=self.config.limits.drain_timeout_s, grace_s=timeout_s)

    def reload(self) -> None:
        """Re-read the config file (SIGHUP); thread-safe."""
        self._runner.spawn(self._reload())

    # event loop side
    async def _serve(self) -> None:
        config = self.config
        compiled = _Compiled(config, None, self.shared)
        await compiled.start()
        self._compiled = compiled
        self._routing = RoutingPolicy(compiled.router)
        policies: list[Policy] = [MetricsPolicy(self.metrics)]
        if config.tracing.enabled:
            tracer = self._tracer = make_tracer(
                config.tracing.service_name, self.settings.collector_endpoint, "gatewatch.proxy",
                config.tracing.sample_ratio, on_outcome=self.metrics.span_outcome,
            )
            policies.append(TracingPolicy(tracer, http_route_of))
        policies += [
            self._routing, AuthPolicy(config.subject_header, self.metrics),
            AccessPolicy(self.decisions, self.metrics, self.shared),
        ]
        chain = build_chain(policies, self._caller)
        host = self.settings.host
        port, admin_port = listen_ports(config, self.settings)
        self._server = HttpServer(
            chain, host, port, server_limits(config),
            on_reject=lambda status, code: self.metrics.count(self.metrics.rejected, code),
            on_shed=lambda reason: self.metrics.count(self.metrics.shed, reason),
            reuse_port=self.worker is not None,
        )
        try:
            await self._server.start()
        except OSError as exc:
            raise ConfigError(f"gateway cannot listen on {host}:{port}: {exc.strerror}") from None
        self._admin = await start_admin(self.registry, self._health, host, admin_port, "gateway",
                                        reuse_port=self.worker is not None, before_scrape=self.metrics.pending.flush)
        self._runner.spawn(self._flush_metrics())
        self.port, self.admin_port = self._server.port, self._admin.port
        source = decision_source(self.settings.control_plane_url, self.settings.control_token.get_secret_value(),
                                 self.decisions, config.decisions_file)
        self._runner.spawn(self._run_source(source))
        if self.config_path is not None:
            self._runner.spawn(self._watch_config())

    async def _run_source(self, source: DecisionSource | None) -> None:
        while True:
            if source is not None:
                await source.run()
            await asyncio.sleep(1.0)
            self.decisions.purge()

    async def _flush_metrics(self) -> None:
        while True:
            await asyncio.sleep(METRICS_FLUSH_S)
            self.metrics.pending.flush()

    async def _shutdown(self, drain_s: float) -> None:
        if self._server is not None:
            await self._server.stop(drain_s)
        if self._admin is not None:
            await self._admin.stop(1.0)
        self._caller.close()
        if self._compiled is not None:
            await self._compiled.close()
        if self._tracer is not None:
            await asyncio.get_running_loop().run_in_executor(None, self._tracer.shutdown)
        self.metrics.pending.flush()  # the last requests' counts, before a worker's files are final

    # hot reload
    def _mtime(self) -> float:
        try:
            return self.config_path.stat().st_mtime if self.config_path is not None else 0.0
        except OSError:
            return 0.0

    async def _watch_config(self) -> None:
        while True:
            await asyncio.sleep(0.5)
            mtime = self._mtime()
            if mtime != self._config_mtime:
                self._config_mtime = mtime
                await self._reload()

    async def _reload(self) -> None:
        """Swap in the new config if it is valid; otherwise keep serving the old one."""
        assert self.config_path is not None
        try:
            config = load_gateway_config(self.config_path)
            compiled = _Compiled(config, self._compiled, self.shared)
            await compiled.start()
        except ConfigError as exc:
            log.error("config reload rejected, keeping the previous config: %s", exc)
            self.metrics.count(self.metrics.reloads, "invalid")
            return
        old, self._compiled, self.config = self._compiled, compiled, config
        assert self._routing is not None and self._server is not None
        self._routing.router = compiled.router
        self._server.limits = server_limits(config)
        self._caller.pool.configure(config.upstream_keepalive.max_idle_per_endpoint,
                                    config.upstream_keepalive.idle_timeout_s)
        self.config_version += 1
        self.metrics.count(self.metrics.reloads, "ok")
        log.info("config reloaded (version %d, %d routes)", self.config_version, len(config.routes))
        if old is not None:
            await old.close()

    # admin port
    def _health(self) -> dict[str, object]:
        health: dict[str, object] = {
            "config_version": self.config_version, "routes": len(self.config.routes),
            "decisions": len(self.decisions), "decisions_version": self.decisions.version,
        }
        if self.worker is not None:
            health.update(worker=self.worker, pid=os.getpid())
        return health
