"""The gateway chain's policies after routing: authentication, then access (control-plane decisions
and configured rate limits). Per-route settings come from `route.policy` (see proxy/gateway.py)."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING, Final

from gatewatch.decisions import DecisionKind, Mode
from proxy.auth import Authenticator, AuthFailure, Identity
from proxy.decisionstore import DecisionStore
from proxy.metrics import GatewayMetrics
from proxy.policy import CallNext, Exchange, Response, answered
from proxy.ratelimit import Gcra, Verdict
from proxy.routing import Route

if TYPE_CHECKING:
    from proxy.decisionstore import Decision  # a model or a parsed wire decision
    from proxy.sharedlimits import SharedTatTable

OUTCOME: Final = "gatewatch.ratelimit.outcome"
AUTH_OUTCOME: Final = "gatewatch.auth.outcome"
_NO_LIMITS: Final[list[tuple[Gcra, str]]] = []  # a route without rate limits (never appended to)


class AuthPolicy:
    """Authenticates per route, checks scopes, passes the subject upstream in a trusted header."""

    name = "auth"

    def __init__(self, subject_header: str, metrics: GatewayMetrics) -> None:
        self.subject_header = subject_header.lower()
        self.metrics = metrics
        self._ok = metrics.auth.labels("ok")  # the usual outcome, pre-bound

    def handle(self, exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
        headers = exchange.request.headers
        if self.subject_header in headers:
            headers.remove(self.subject_header)  # only the gateway may set it
        route: Route = exchange.route  # typed: compiled, native attribute reads rather than lookups by name
        auth: tuple[Authenticator, frozenset[str]] | None = route.policy.get("auth")
        if auth is None:
            return call_next(exchange)
        authenticator, scopes = auth
        try:
            identity = authenticator.cached(exchange.request)
        except AuthFailure as failure:
            return answered(self._refused(exchange, failure))
        if identity is None:  # a token to verify or introspect: this request awaits it
            return self._authenticate(exchange, call_next, authenticator, scopes)
        return self._admit(exchange, call_next, identity, scopes)

    async def _authenticate(self, exchange: Exchange, call_next: CallNext, authenticator: Authenticator,
                            scopes: frozenset[str]) -> Response:
        try:
            identity = await authenticator.authenticate(exchange.request)
        except AuthFailure as failure:
            return self._refused(exchange, failure)
        return await self._admit(exchange, call_next, identity, scopes)

    def _admit(self, exchange: Exchange, call_next: CallNext, identity: Identity,
               scopes: frozenset[str]) -> Awaitable[Response]:
        """Pass an authenticated exchange on (its subject upstream), or 403 without the scopes."""
        if not scopes <= identity.scopes:
            exchange.set_attribute("enduser.id", identity.subject)
            failure = AuthFailure("forbidden", "token lacks a required scope", 403, scope=" ".join(sorted(scopes)))
            return answered(self._refused(exchange, failure))
        exchange.state["identity"] = identity
        attributes = exchange.attributes
        attributes[AUTH_OUTCOME] = "ok"
        self.metrics.pending.inc(self._ok)
        if identity.subject:
            attributes["enduser.id"] = identity.subject
            exchange.request.headers.set(self.subject_header, identity.subject)
        return call_next(exchange)  # unawaited: no frame of ours while the request is upstream

    def _refused(self, exchange: Exchange, failure: AuthFailure) -> Response:
        exchange.set_attribute(AUTH_OUTCOME, failure.outcome)
        self.metrics.count(self.metrics.auth, failure.outcome)
        return failure.response()


def _limited(verdict: Verdict, why: str) -> Response:
    return Response.json(429, {"error": "rate_limited", "message": why}, verdict.headers())


class AccessPolicy:
    """Applies block / rate_limit / route_limit decisions until they expire, then configured limits."""

    name = "access"

    def __init__(self, store: DecisionStore, metrics: GatewayMetrics, shared: SharedTatTable | None = None) -> None:
        self.store = store
        self.metrics = metrics
        self.shared = shared  # worker processes' rate-limit state
        self._allowed = metrics.ratelimit.labels("allowed")  # the usual outcome, pre-bound
        self._limiters: dict[str, Gcra] = {}  # decision id -> its bucket
        store.subscribe(self._on_update)

    def _on_update(self, store: DecisionStore) -> None:
        active = store.all_active()
        ids = {decision.id for decision in active}
        self._limiters = {key: value for key, value in self._limiters.items() if key in ids}
        self.metrics.decisions_active.set(len(active))

    def _limiter(self, decision: Decision) -> Gcra:
        limiter = self._limiters.get(decision.id)
        if limiter is None:
            rate = float(decision.params.get("rate_per_s", 1.0))
            burst = int(decision.params.get("burst", max(1, int(rate))))
            limiter = Gcra(max(rate, 1e-6), max(burst, 1), shared=self.shared, name=f"decision:{decision.id}")
            self._limiters[decision.id] = limiter
        return limiter

    def _record(self, exchange: Exchange, decision: Decision, effect: str) -> None:
        exchange.set_attribute("gatewatch.decision.id", decision.id)
        exchange.set_attribute("gatewatch.decision.kind", decision.kind.value)
        exchange.set_attribute("gatewatch.decision.effect", effect)
        self.metrics.count(self.metrics.decision_effects, decision.kind.value, effect)

    def _apply(self, exchange: Exchange, decision: Decision, key: str, verdicts: list[Verdict]) -> Response | None:
        """One decision's effect on this request: a response to send, or None to go on."""
        enforce = decision.mode is Mode.ENFORCE
        if decision.kind is DecisionKind.BLOCK:
            self._record(exchange, decision, "blocked" if enforce else "dry_run")
            if enforce:
                exchange.set_attribute(OUTCOME, "blocked")
                return Response.json(403, {"error": "blocked", "message": "client blocked by policy"})
            return None
        if decision.kind not in (DecisionKind.RATE_LIMIT, DecisionKind.ROUTE_LIMIT):
            return None  # circuit decisions are for sidecars
        verdict = self._limiter(decision).check(key)
        if verdict.allowed:
            verdicts.append(verdict)
            self._record(exchange, decision, "allowed")
            return None
        self._record(exchange, decision, "limited" if enforce else "dry_run")
        if enforce:
            exchange.set_attribute(OUTCOME, "limited")
            self.metrics.count(self.metrics.ratelimit, "limited")
            return _limited(verdict, f"{decision.kind.value} decision by {decision.reason.detector}")
        exchange.set_attribute(OUTCOME, "dry_run_limited")
        return None

    def _decide(self, exchange: Exchange, identity: Identity | None, verdicts: list[Verdict]) -> Response | None:
        """Apply the decisions on the client (address, subject) and on the route, in that order."""
        keys = [exchange.client_address]
        if identity is not None and identity.subject:
            keys.append(identity.subject)
        for key in keys:
            for decision in self.store.active("client", key):
                answer = self._apply(exchange, decision, key, verdicts)
                if answer is not None:
                    return answer
        route: Route = exchange.route
        for decision in self.store.active("route", route.decision_key(exchange.request.method)):
            answer = self._apply(exchange, decision, "", verdicts)
            if answer is not None:
                return answer
        return None

    def handle(self, exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
        route: Route = exchange.route
        identity: Identity | None = exchange.state.get("identity")
        verdicts: list[Verdict] = []
        store = self.store
        if store:  # no decisions in force (the usual case): skip the three lookups
            answer = self._decide(exchange, identity, verdicts)
            if answer is not None:
                return answered(answer)
        limits: list[tuple[Gcra, str]] = route.policy.get("rate_limits", _NO_LIMITS)  # see proxy/gateway.py
        for limiter, kind in limits:
            verdict = limiter.check(self._key(exchange, identity, kind))
            if not verdict.allowed:
                exchange.set_attribute(OUTCOME, "limited")
                self.metrics.count(self.metrics.ratelimit, "limited")
                return answered(_limited(verdict, f"rate limit of route {route.name}"))
            verdicts.append(verdict)
        if not verdicts:
            if OUTCOME not in exchange.attributes:
                exchange.set_attribute(OUTCOME, "unlimited")
            return call_next(exchange)
        exchange.attributes.setdefault(OUTCOME, "allowed")
        self.metrics.pending.inc(self._allowed)
        tightest = verdicts[0] if len(verdicts) == 1 else min(verdicts, key=lambda verdict: verdict.remaining)
        # On whatever response the client gets (the upstream's, or a 502/504 if it fails); set before
        # calling on, so that no frame of ours waits for the response.
        exchange.add_response_fields(tightest.headers())
        return call_next(exchange)

    @staticmethod
    def _key(exchange: Exchange, identity: Identity | None, kind: str) -> str:
        """The bucket key: the client address, the subject, the API key id, or one shared bucket."""
        if kind == "route":
            return ""
        if kind in ("subject", "api_key") and identity is not None and identity.subject:
            return identity.subject
        return exchange.client_address
