"""The sidecar's service registry: per callee, the engine cluster plus the resilience state the
outbound chain keeps for it (service breaker, endpoint breakers, retry config and budget).

Circuit decisions from the control plane target edges (`caller->callee`); `apply_decisions`
forces or releases the matching service breakers whenever the decision store changes.
"""

from __future__ import annotations

import ssl
import time
from dataclasses import dataclass

from gatewatch.decisionwire import DecisionKind, Mode, Scope
from proxy.breaker import BreakerState, CircuitBreaker, EndpointSet
from proxy.decisionstore import DecisionStore
from proxy.endpoints import endpoint_of
from proxy.retry import RetryBudget, RetryConfig
from proxy.sidecar_plan import SidecarPlan
from proxy.upstream import Cluster, Endpoint

_FORCED = {DecisionKind.CIRCUIT_OPEN: BreakerState.OPEN, DecisionKind.CIRCUIT_CLOSE: BreakerState.CLOSED}


@dataclass(slots=True)
class Upstream:
    """One callee service as seen from this sidecar."""

    name: str
    edge: str  # `caller->callee`, the key of circuit decisions and the breaker's name on the wire
    cluster: Cluster
    by_address: dict[str, Endpoint]
    endpoints: EndpointSet
    breaker: CircuitBreaker
    retry: RetryConfig
    budget: RetryBudget
    decision_id: str = ""  # the decision currently forcing `breaker`, if any


def build_registry(plan: SidecarPlan, client_tls: ssl.SSLContext | None) -> dict[str, Upstream]:
    """Upstreams for every service in the plan's registry."""
    registry = {}
    for name, entry in plan.services.items():
        endpoints = [endpoint_of(address, name, client_tls) for address in entry.endpoints]
        retry, breaker_config = entry.retry, entry.breaker
        edge = f"{plan.service}->{name}"
        registry[name] = Upstream(
            name=name, edge=edge,
            # Passive ejection is done by our endpoint breakers; the cluster's own stays lenient.
            cluster=Cluster(name, endpoints, max_failures=1 << 30),
            by_address={endpoint.address: endpoint for endpoint in endpoints},
            endpoints=EndpointSet(name, [endpoint.address for endpoint in endpoints], breaker_config),
            breaker=CircuitBreaker(edge, breaker_config),
            retry=retry,
            budget=RetryBudget(ratio=retry.budget_ratio, min_per_s=retry.budget_min_per_s),
        )
    return registry


def apply_decisions(registry: dict[str, Upstream], store: DecisionStore) -> None:
    """Force each edge's breaker to what an enforced circuit decision says, until it expires;
    release it when its decision is gone (withdrawn or replaced)."""
    wall, mono = time.time(), time.monotonic()
    for upstream in registry.values():
        circuit = [d for d in store.active(Scope.EDGE, upstream.edge) if d.kind in _FORCED and d.mode is Mode.ENFORCE]
        decision = max(circuit, key=lambda d: d.created_at) if circuit else None  # the newest wins
        if decision is None:
            if upstream.decision_id:
                upstream.breaker.unforce()
                upstream.decision_id = ""
            continue
        if decision.id != upstream.decision_id:
            until = mono + (decision.expires_at.timestamp() - wall)
            upstream.breaker.force(_FORCED[decision.kind], until)
            upstream.decision_id = decision.id
