"""The proxy engine's policy contract: what a policy sees, what it returns, how chains are built.

One engine, several chains (Envoy's filter-chain idea). A policy is onion-shaped middleware:

    class Deny:
        name = "deny"
        async def handle(self, exchange: Exchange, call_next: CallNext) -> Response:
            if exchange.request.headers.get("x-deny"):
                exchange.set_attribute("gatewatch.deny", True)
                return Response.json(403, {"error": "denied"})
            return await call_next(exchange)

* It may answer (401, 429, 503, ...) without calling `call_next`, or pass the exchange on, or wrap
  the call (retry, breaker, deadline). The innermost handler is the upstream caller
  (`proxy.upstream.UpstreamCaller`), which sends the request to `exchange.upstream`.
* Upstream failures surface as `ProxyError` subclasses (`UpstreamConnectError` 502,
  `UpstreamTimeout` 504) so wrapping policies can catch them; the server turns any uncaught
  `ProxyError` into its status with a JSON error body.
* Span attributes: `exchange.set_attribute(key, value)`; the tracing layer copies them onto the
  request's server span when the response completes. Use OTel semantic-convention names first,
  `gatewatch.*` for our own (`gatewatch.ratelimit.outcome`, `gatewatch.breaker.state`).
* Metrics: a policy that exports metrics takes a `prometheus_client.CollectorRegistry` in its
  constructor and creates `gatewatch_proxy_*` (shared engine) or `gatewatch_gateway_*` /
  `gatewatch_sidecar_*` (mode-specific) metrics there; the admin port serves that registry.
* A retrying policy must only retry when `exchange.request.body` is replayable: the request body
  is a one-shot stream unless a policy buffered it with `await exchange.request.buffer_body(limit)`.
* Work after the response is written (end a span, release a permit): `exchange.on_complete(cb)`.
  Fields for the response the client gets, whoever makes it (RateLimit-*): `exchange.add_response_fields`.
* A policy with nothing to do once the response exists may be a plain `def` that returns
  `call_next(exchange)` unawaited (and `answered(response)` when it answers itself): its frame is
  then gone while the request is upstream. Every frame on the await chain costs each time the
  request waits and resumes, ~1 us a policy in the gateway's chain (README Proxy performance).
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Generator, Iterable
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, cast

from proxy.bodies import EMPTY_BODY, Body, limit_body, replayed

if TYPE_CHECKING:
    from proxy.upstream import Cluster, Endpoint

AttributeValue = str | bool | int | float


class Headers:
    """Ordered multi-map of header fields; names are kept lower-case, values as latin-1 str."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = (), lowered: list[tuple[str, str]] | None = None) -> None:
        """The fields `items` (names lower-cased), or the list `lowered` itself (see `trusted`)."""
        self._items = lowered if lowered is not None else [(name.lower(), value) for name, value in items]

    @staticmethod
    def trusted(items: list[tuple[str, str]]) -> Headers:
        """Wrap a list whose names are already lower-case (parser fast path; no copy)."""
        # A static method calling the class by name: compiled, a direct constructor call, where a
        # classmethod's `cls()` went through type() and its argument parsing (~0.1 us, 3 a request).
        return Headers((), items)

    def get(self, name: str, default: str | None = None) -> str | None:
        """The first value of `name` (lower-case), or default."""
        for key, value in self._items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        """Every value of `name` (lower-case), in order."""
        return [value for key, value in self._items if key == name]

    def add(self, name: str, value: str) -> None:
        """Append a field (keeps existing ones)."""
        self._items.append((name.lower(), value))

    def extend(self, items: Iterable[tuple[str, str]]) -> None:
        """Append fields whose names are already lower-case (no per-field `lower()`)."""
        self._items.extend(items)

    def set(self, name: str, value: str) -> None:
        """Replace every field called `name` with one."""
        name = name.lower()
        if name in self:  # usually absent (traceparent, subject): skip rebuilding the list
            self.remove(name)
        self._items.append((name, value))

    def remove(self, name: str) -> None:
        """Drop every field called `name`."""
        name = name.lower()
        self._items = [item for item in self._items if item[0] != name]

    def items(self) -> list[tuple[str, str]]:
        """The fields as (lower-case name, value) pairs; the list is live, do not keep it."""
        return self._items

    def __contains__(self, name: object) -> bool:
        for key, _ in self._items:  # noqa: SIM110 - a plain loop is faster; runs several times per request
            if key == name:
                return True
        return False

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"


class Request:
    """One HTTP/1.1 request as the proxy received it; policies may edit headers and target."""

    __slots__ = ("_buffered", "body", "content_length", "headers", "host", "method", "path", "query", "version")

    def __init__(
        self, method: str, path: str, query: str, headers: Headers, body: Body | None = None,
        version: str = "1.1", content_length: int | None = None,
    ) -> None:
        self.method = method
        self.path = path
        self.query = query
        self.headers = headers
        self.body: Body = body if body is not None else EMPTY_BODY
        self.version = version
        self.content_length = content_length  # None: chunked or no body
        self.host = headers.get("host", "") or ""
        self._buffered: list[bytes] | None = None if body is not None else []

    @property
    def target(self) -> str:
        """The request-target to send upstream: path plus `?query` if any."""
        return f"{self.path}?{self.query}" if self.query else self.path

    @property
    def replayable(self) -> bool:
        """True when the body is buffered (or absent), so the request can be sent again."""
        return self._buffered is not None

    async def buffer_body(self, limit: int) -> bytes:
        """Read the whole body (at most `limit` bytes, else BodyTooLarge) and make it replayable."""
        if self._buffered is None:
            self._buffered = [chunk async for chunk in limit_body(self.body, limit)]
        self.body = replayed(self._buffered)
        return b"".join(self._buffered)

    def fresh_body(self) -> Body:
        """A new iterator over a buffered body (for each retry attempt); the live stream otherwise."""
        if self._buffered is not None:
            self.body = replayed(self._buffered)
        return self.body


def answered(response: Response) -> Awaitable[Response]:
    """An awaitable of `response`: what a plain-`def` policy returns when it answers itself."""
    return _Answered(response)


def answered_now(awaitable: Awaitable[Response]) -> Response | None:
    """The response in an awaitable that `answered` made, else None (the server then awaits it)."""
    return awaitable.response if isinstance(awaitable, _Answered) else None


class _Answered:
    __slots__ = ("response",)

    def __init__(self, response: Response) -> None:
        self.response = response

    def __await__(self) -> Generator[Any, None, Response]:
        return self.response
        yield  # pragma: no cover - makes this a generator that returns at once


class Response:
    """A response to send downstream; `body` is bytes or a stream of chunks (sent as it arrives)."""

    __slots__ = ("body", "content_length", "headers", "reason", "status")

    def __init__(
        self, status: int, headers: Headers | None = None, body: bytes | Body = b"",
        content_length: int | None = None, reason: str = "",
    ) -> None:
        self.status = status
        self.headers = headers if headers is not None else Headers()
        self.body = body
        # For streamed bodies: the upstream's Content-Length, or None to send chunked.
        self.content_length = len(body) if isinstance(body, bytes) else content_length
        self.reason = reason

    @classmethod
    def json(cls, status: int, payload: Any, headers: Iterable[tuple[str, str]] = ()) -> Response:
        """A small JSON response (error bodies, admin answers)."""
        response = cls(status, Headers(headers), json.dumps(payload, separators=(",", ":")).encode())
        response.headers.set("content-type", "application/json")
        return response


Listener = Callable[["Response | None", "BaseException | None"], None]


class Pending:
    """A response still to come, handed to one listener once settled: the upstream caller's callback
    path (no future, no task). The server listens; an `async def` policy may simply await it."""

    def __init__(self) -> None:
        self.settled = False
        self.response: Response | None = None
        self.error: BaseException | None = None
        self._listener: Listener | None = None
        self._future: asyncio.Future[Response] | None = None

    def listen(self, listener: Listener) -> None:
        """Call `listener(response, error)` when settled (now, if it is)."""
        if self.settled:
            listener(self.response, self.error)
        else:
            self._listener = listener

    def abandoned(self) -> bool:
        """True when the coroutine awaiting it was cancelled: nobody will take the response."""
        return self._future is not None and self._future.cancelled()

    def resolve(self, response: Response) -> None:
        """Settle with a response (a second settlement is ignored)."""
        self._settle(response, None)

    def fail(self, error: BaseException) -> None:
        """Settle with an error (a second settlement is ignored)."""
        self._settle(None, error)

    def _settle(self, response: Response | None, error: BaseException | None) -> None:
        if self.settled:
            return
        self.settled, self.response, self.error = True, response, error
        listener, self._listener = self._listener, None
        if listener is not None:
            listener(response, error)
        future = self._future
        if future is not None and not future.done():
            if error is not None:
                future.set_exception(error)
            else:
                future.set_result(cast(Response, response))

    def __await__(self) -> Generator[Any, None, Response]:
        if not self.settled:
            if self._future is None:
                self._future = asyncio.get_running_loop().create_future()
            return (yield from self._future)
        if self.error is not None:
            raise self.error
        return cast(Response, self.response)


class ProxyError(Exception):
    """A failure the server answers with `status` and a JSON body `{"error": code, "message": ...}`."""

    # This kind's status and code (an instance may be given others). Set on each instance in
    # __init__: compiled (mypyc) exceptions do not inherit class-level instance defaults.
    default_status: ClassVar[int] = 500
    default_code: ClassVar[str] = "proxy_error"

    def __init__(self, message: str, status: int | None = None, code: str | None = None) -> None:
        super().__init__(message)
        self.status = self.default_status if status is None else status
        self.code = self.default_code if code is None else code

    def response(self) -> Response:
        """The downstream answer for this error."""
        return Response.json(self.status, {"error": self.code, "message": str(self)})


class UpstreamConnectError(ProxyError):
    """The upstream refused or dropped the connection before answering (502); safe to retry."""

    default_status = 502
    default_code = "upstream_unavailable"


class UpstreamTimeout(ProxyError):
    """The upstream did not answer within the route timeout or deadline (504)."""

    default_status = 504
    default_code = "upstream_timeout"


class ClientTimeout(ProxyError):
    """The client was too slow sending its request (408; the server closes the connection)."""

    default_status = 408
    default_code = "request_timeout"


class NoRoute(ProxyError):
    """No route matches the request (404)."""

    default_status = 404
    default_code = "no_route"


class Exchange:
    """One request's journey through the chain: the request plus what policies decided about it."""

    __slots__ = (
        "_completions", "attributes", "client_address", "client_port", "deadline", "endpoint", "request",
        "response_fields", "route", "scheme", "state", "timeout_s", "upstream",
    )

    def __init__(self, request: Request, client_address: str, client_port: int = 0, scheme: str = "http") -> None:
        self.request = request
        self.client_address = client_address
        self.client_port = client_port
        self.scheme = scheme
        self.route: Any = None  # the matched route (mode-specific type), set by the routing policy
        self.upstream: Cluster | None = None  # where the upstream caller sends the request
        self.endpoint: Endpoint | None = None  # chosen endpoint (set by the caller; a policy may pin one)
        self.timeout_s: float | None = None  # per-try time to first response byte
        self.deadline: float | None = None  # absolute loop.time() after which the exchange fails (504)
        self.attributes: dict[str, AttributeValue] = {}
        self.state: dict[str, Any] = {}  # scratch space shared by policies of one chain
        self._completions: list[Callable[[Exchange, int], None]] | None = None
        self.response_fields: list[tuple[str, str]] | None = None  # see add_response_fields

    def add_response_fields(self, fields: Iterable[tuple[str, str]]) -> None:
        """Fields (lower-case names) for the response the client gets, whichever policy, the upstream
        or an error makes it; the server adds them when it writes the response."""
        if self.response_fields is None:
            self.response_fields = []
        self.response_fields.extend(fields)

    def set_attribute(self, key: str, value: AttributeValue) -> None:
        """Record an attribute on this request's span."""
        self.attributes[key] = value

    def on_complete(self, callback: Callable[[Exchange, int], None]) -> None:
        """Call `callback(exchange, status)` once the response is written (or the exchange failed)."""
        if self._completions is None:
            self._completions = []
        self._completions.append(callback)

    def complete(self, status: int) -> None:
        """Run the completion callbacks (the server calls this exactly once)."""
        callbacks, self._completions = self._completions, None
        if callbacks is not None:  # not `callbacks or ()`: compiled, a list loops without an iterator
            for callback in callbacks:
                callback(self, status)


CallNext = Callable[[Exchange], Awaitable[Response]]


class Policy(Protocol):
    """One link of a chain: answer the exchange or pass it on with `await call_next(exchange)`."""

    name: str

    def handle(self, exchange: Exchange, call_next: CallNext) -> Awaitable[Response]:
        """The response for this exchange, as an awaitable (an `async def`, or see the module doc)."""
        ...


class _Link:
    """One policy bound to the rest of its chain: calling it calls `handle(exchange, call_next)`.

    Not a coroutine wrapper: one frame per policy per request, not two. Not a `partial` with
    `call_next=` either: that copied its keywords into a new dict on every call.
    """

    def __init__(self, handle: Callable[[Exchange, CallNext], Awaitable[Response]], call_next: CallNext) -> None:
        self.handle = handle
        self.call_next = call_next

    def __call__(self, exchange: Exchange) -> Awaitable[Response]:
        return self.handle(exchange, self.call_next)


def build_chain(policies: Iterable[Policy], terminal: CallNext) -> CallNext:
    """Compose policies (outermost first) around the terminal handler into one callable."""
    handler = terminal
    for policy in reversed(list(policies)):
        handler = _Link(policy.handle, handler)
    return handler
