"""The engine's listener: an asyncio.Protocol HTTP/1.1 server on httptools (llhttp, strict mode).

llhttp rejects request-smuggling shapes itself (Content-Length with Transfer-Encoding, duplicate
Content-Length, obsolete line folding, bad chunk sizes, unknown transfer codings); this module adds
header-size (431) and slow/idle-client (408) limits, keep-alive, pipelining in order, streamed
bodies with flow control both ways, and graceful drain. Each request runs the handler (a policy
chain) with an `Exchange`; a `ProxyError` becomes its status with a JSON body.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import resource
import ssl as ssl_module
import time
from collections import deque
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any, ClassVar, Final, cast

import httptools

from proxy.bodies import Body, BodyTooLarge, close_body
from proxy.flow import WriteBatch, WriteFlow
from proxy.headers import FIELD_NAMES, METHODS, message_head
from proxy.policy import (
    CallNext,
    ClientTimeout,
    Exchange,
    Headers,
    Pending,
    ProxyError,
    Request,
    Response,
    answered_now,
)

log = logging.getLogger(__name__)

_BODY_HIGH_WATER: Final = 256 * 1024
_wall_clock: Final = time.time
_REASONS: Final = {status.value: status.phrase for status in HTTPStatus}
_STATUS_LINES: Final = {status: f"HTTP/1.1 {status} {phrase}\r\n" for status, phrase in _REASONS.items()}


def _status_line(status: int, reason: str = "", unknown: str = "Unknown") -> str:
    """`HTTP/1.1 <status> <reason>` and its CRLF: the standard phrase unless `reason` is given
    (`unknown` for a status without one). The usual lines are built once."""
    line = None if reason else _STATUS_LINES.get(status)
    return line if line is not None else f"HTTP/1.1 {status} {reason or unknown}\r\n"


@dataclass(frozen=True)
class ServerLimits:
    """Per-listener limits on what clients may send and how slowly."""

    max_header_bytes: int = 16 * 1024
    header_timeout_s: float = 10.0  # from the first byte of a request to the end of its headers
    body_timeout_s: float = 30.0  # longest wait for the next piece of a request body
    idle_timeout_s: float = 60.0  # keep-alive connection without a request
    # Admission (0 = no limit): beyond these the listener sheds with 503 + Retry-After at once, no
    # upstream call, so a flood costs a few bytes per request instead of queued handlers and memory.
    max_inflight: int = 0  # requests being handled across all connections
    max_connections: int = 0  # open client connections
    retry_after_s: int = 1


def shed_response(reason: str, retry_after_s: int) -> Response:
    """The 503 a listener answers when it sheds a request (reason: inflight or connections)."""
    response = ProxyError(f"overloaded ({reason} limit reached); retry later", 503, "overloaded").response()
    response.headers.set("retry-after", str(retry_after_s))
    return response


RejectHook = Callable[[int, str], None]
ShedHook = Callable[[str], None]
_heap_settled = False
# Gen-1 passes between full collections in a process that only proxies (CPython's default is 10). A
# full pass also empties the interpreter's free lists, ~1 ms however little gen 2 holds, and with
# the default a gateway at 20,000 requests/s made one every second (README, session 16).
PROXY_FULL_COLLECTION_EVERY: Final = 100


def settle_heap() -> None:
    """Once per process: collect, then freeze the startup heap (modules, configs, SDK objects).

    Later collections then scan only what serving allocates; unfrozen, a gen-1/2 pass over the
    startup heap stalled the event loop ~10 ms at a time (it showed in the gateway's p99).
    """
    global _heap_settled
    if not _heap_settled:
        _heap_settled = True
        gc.collect()
        gc.freeze()


def collect_fully_seldom() -> None:
    """In a process that only proxies: a full collection every `PROXY_FULL_COLLECTION_EVERY` gen-1
    passes. Not in embedded mode, where the detectors' (pandas, scikit-learn) garbage would wait too."""
    young, middle, _ = gc.get_threshold()
    gc.set_threshold(young, middle, PROXY_FULL_COLLECTION_EVERY)


def raise_open_files_limit() -> int:
    """The process's soft limit on open files raised to its hard one (as Go's runtime does at start);
    the soft limit in force after it.

    Each proxied request holds a client and an upstream connection, and the usual soft limit of
    1024 would fail a burst of ~500 with "too many open files" although the hard limit allows more.
    """
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == hard:
        return soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
    except (ValueError, OSError) as exc:  # e.g. an unlimited hard limit above the kernel's nr_open
        log.debug("the open files limit stays at %d: %s", soft, exc)
        return soft
    return hard


_DAYS: Final = ("Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun")
_MONTHS: Final = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")


def http_date(seconds: float) -> str:
    """`seconds` as an HTTP `Date` (IMF-fixdate, RFC 9110), e.g. `Sun, 06 Nov 1994 08:49:37 GMT`."""
    # Not email.utils.formatdate: importing `email` costs a sidecar ~0.5 MB for this one line.
    t = time.gmtime(seconds)
    return (f"{_DAYS[t.tm_wday]}, {t.tm_mday:02d} {_MONTHS[t.tm_mon - 1]} {t.tm_year} "
            f"{t.tm_hour:02d}:{t.tm_min:02d}:{t.tm_sec:02d} GMT")


class _Clock:
    """Cached `Date` field line, refreshed once a second."""

    second: ClassVar[int] = 0
    line: ClassVar[str] = ""

    @classmethod
    def date_line(cls) -> str:
        now = int(_wall_clock())
        if now != cls.second:
            cls.second = now
            cls.line = f"date: {http_date(now)}\r\n"
        return cls.line


class RequestBody:
    """A request body arriving from the socket, read once by the handler as an async iterator."""

    __slots__ = ("chunks", "conn", "done", "error", "queued", "waiter")

    def __init__(self, conn: HttpServerProtocol) -> None:
        self.conn = conn
        self.chunks: deque[bytes] = deque()
        self.queued = 0
        self.done = False
        self.error: BaseException | None = None
        self.waiter: asyncio.Future[None] | None = None

    def feed(self, chunk: bytes) -> None:
        self.chunks.append(chunk)
        self.queued += len(chunk)
        if self.queued > _BODY_HIGH_WATER:
            self.conn.pause_reading()
        self._wake()

    def finish(self, error: BaseException | None = None) -> None:
        self.done = True
        if error is not None and self.error is None:
            self.error = error
        self._wake()

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def __aiter__(self) -> RequestBody:
        return self

    async def __anext__(self) -> bytes:
        while not self.chunks:
            if self.error is not None:
                raise self.error
            if self.done:
                raise StopAsyncIteration
            loop = self.conn.loop
            self.waiter = loop.create_future()
            timer = loop.call_later(self.conn.limits.body_timeout_s, self._expire)
            try:
                await self.waiter
            finally:
                timer.cancel()
                self.waiter = None
        chunk = self.chunks.popleft()
        self.queued -= len(chunk)
        if self.queued < _BODY_HIGH_WATER // 2:
            self.conn.resume_reading()
        return chunk

    def _expire(self) -> None:
        self.finish(ClientTimeout("client sent the request body too slowly"))


class HttpServerProtocol(WriteFlow):
    """One client connection."""

    def __init__(self, server: HttpServer) -> None:
        self.server = server
        self.limits = server.limits
        self.handler = server.handler
        self.loop = asyncio.get_running_loop()
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.client = ("", 0)
        self.peer_cert: dict[str, object] | None = None
        self.scheme = "https" if server.ssl else "http"
        # parsing state
        self.in_head = False
        self.head_bytes = 0
        self.url = b""
        self.raw_headers: list[tuple[str, str]] = []
        self.head_size = 0  # the parsed head's size (URL + fields), checked against max_header_bytes
        self.body: RequestBody | None = None
        self.head_started = 0.0
        # handling state
        self.pending: deque[tuple[Request, RequestBody | None, bool]] = deque()
        self.busy = False  # a request is being handled (they are answered one at a time, in order)
        self.dispatching = False  # in _dispatch: an answer given meanwhile leaves the next one to it
        # the request being handled
        self.exchange: Exchange | None = None
        self.request_body: RequestBody | None = None
        self.keep_alive = True
        self.admitted = False  # counted in server.inflight
        self.served = 0
        self.idle_since = self.loop.time()
        self.closing = False
        self.broken = False  # a parse error while a request was in flight: close after its answer
        # a malformed request pipelined behind ones in flight: answered (then close) after them
        self.deferred: tuple[int, str, str] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.read_paused = False

    # connection lifecycle
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        # uvloop transports are not asyncio.Transport subclasses (no isinstance), same interface.
        transport = cast(asyncio.Transport, transport)
        self.transport = transport
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple):
            self.client = (str(peer[0]), int(peer[1]))
        # mTLS hook (sidecar): the verified client certificate, handed to policies per request.
        ssl_object = transport.get_extra_info("ssl_object")
        self.peer_cert = ssl_object.getpeercert() if ssl_object is not None else None
        limits = self.server.limits
        if limits.max_connections and len(self.server.connections) >= limits.max_connections:
            self._shed_connection(limits.retry_after_s)
            return
        self.server.connections.add(self)
        self.tick = min(self.limits.header_timeout_s, self.limits.idle_timeout_s) / 2
        self._arm_timer(self.tick)

    def _shed_connection(self, retry_after_s: int) -> None:
        """Over the connection limit: answer 503 before reading anything, then close."""
        self.server.shed("connections")
        response = shed_response("connections", retry_after_s)
        assert isinstance(response.body, bytes)
        self._write_error(response.status, response.body, response.headers.items())
        self._close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.closing = True
        self.server.connections.discard(self)
        if self.timer is not None:
            self.timer.cancel()
        if self.body is not None and not self.body.done:
            self.body.finish(ClientGone("client closed the connection"))
        self._wake_drain()

    def connection_ended(self) -> bool:
        return self.closing

    def pause_reading(self) -> None:
        if not self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.read_paused and self.transport is not None and not self.closing:
            self.read_paused = False
            self.transport.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self.closing or self.broken:
            return
        if not self.in_head and self.body is None:
            self.in_head = True  # first bytes of a new request: the header timeout starts now
            self.head_started = self.loop.time()
            self.head_bytes = 0
        if self.in_head:
            self.head_bytes += len(data)
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            pass  # the request was dispatched; protocol upgrades are not proxied
        except httptools.HttpParserError as exc:
            self._parse_failed(str(exc))
        else:
            if self.in_head and self.head_bytes > self.limits.max_header_bytes:
                self._reject(431, "header_too_large", "request headers too large")
        # Handlers start once the chunk is parsed, never inside the parser's callbacks: one may
        # answer (and close) at once, and the parser must not be fed again from within itself.
        if self.pending and not self.busy and not self.dispatching:
            self._dispatch()

    # httptools callbacks
    def on_message_begin(self) -> None:
        self.in_head = True
        self.url = b""
        self.raw_headers = []
        self.head_size = 0

    def on_url(self, url: bytes) -> None:
        self.url += url
        self.head_size += len(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.raw_headers.append((FIELD_NAMES[name], value.decode("latin-1")))
        self.head_size += len(name) + len(value) + 4

    def on_headers_complete(self) -> None:
        self.in_head = False
        self.head_bytes = 0
        if self.head_size > self.limits.max_header_bytes:
            self._reject(431, "header_too_large", "request headers too large")
            return
        keep_alive = self.parser.should_keep_alive()
        request = self._build_request(keep_alive)
        if request is None:
            return
        self.pending.append((request, self.body, keep_alive))
        if self.body is not None and (request.headers.get("expect") or "").lower() == "100-continue":
            self._write(b"HTTP/1.1 100 Continue\r\n\r\n")
        if len(self.pending) > 8:
            self.pause_reading()  # a client pipelining far ahead waits for us

    def on_body(self, body: bytes) -> None:
        if self.body is not None:
            self.body.feed(body)

    def on_message_complete(self) -> None:
        if self.body is not None:
            self.body.finish()
            self.body = None

    # request handling
    def _build_request(self, keep_alive: bool) -> Request | None:
        url = self.url.decode("latin-1")
        if url.startswith("/"):
            path, _, query = url.partition("?")
        elif url == "*":
            path, query = "*", ""
        else:
            try:
                # Any: httptools' stub types a URL's parts as bytes, and absent ones are None
                parsed: Any = httptools.parse_url(self.url)
            except httptools.HttpParserInvalidURLError:
                self._reject(400, "bad_request", "malformed request target")
                return None
            path = (parsed.path or b"/").decode("latin-1")
            query = (parsed.query or b"").decode("latin-1")
        headers = Headers.trusted(self.raw_headers)
        length_value = headers.get("content-length")
        content_length = int(length_value) if length_value is not None else None
        chunked = "transfer-encoding" in headers
        self.body = RequestBody(self) if (content_length or chunked) else None
        if content_length == 0:
            content_length = 0
        # llhttp keeps a connection open without a `Connection` field only for HTTP/1.1, so the
        # usual request needs no `get_http_version` (it formats a new string: ~0.3 us a request).
        version = "1.1" if keep_alive and "connection" not in headers else self.parser.get_http_version()
        return Request(METHODS[self.parser.get_method()], path, query, headers, self.body, version, content_length)

    def _dispatch(self) -> None:
        """Handle the pending requests in order while each is answered at once; then wait."""
        self.dispatching = True
        try:
            while not self.busy and not self.closing:
                if self.pending:
                    self._next_request()
                elif self.deferred is not None:
                    status, code, message = self.deferred
                    self._answer_error(status, code, message)
                else:
                    self.idle_since = self.loop.time()
                    break
        finally:
            self.dispatching = False

    def _next_request(self) -> None:
        """Start the handler on the next pending request.

        The handler's answer is usually a `Pending` (the upstream caller's callback path, passed on
        by plain-`def` policies) or a response given at once; those are answered from callbacks.
        Any other awaitable (an `async def` policy) is awaited in a task.
        """
        request, body, keep_alive = self.pending.popleft()
        self.busy = True
        if self.read_paused and len(self.pending) <= 8 and (self.body is None or self.body.queued < _BODY_HIGH_WATER):
            self.resume_reading()
        exchange = Exchange(request, self.client[0], self.client[1], self.scheme)
        if self.peer_cert:
            exchange.state["peer_cert"] = self.peer_cert
        self.exchange, self.request_body, self.keep_alive = exchange, body, keep_alive
        server = self.server
        limits = server.limits
        if limits.max_inflight and server.inflight >= limits.max_inflight:
            server.shed("inflight")
            self._respond(shed_response("inflight", limits.retry_after_s), False)
            return
        server.inflight += 1
        self.admitted = True
        try:
            answer = self.handler(exchange)
        except Exception as exc:  # a plain-def policy (or the caller) failed before any await
            self._failed(exc)
            return
        if isinstance(answer, Pending):  # the usual case first
            answer.listen(self._on_settled)
            return
        response = answered_now(answer)
        if response is not None:
            self._respond(response, False)
        else:
            self._track(self.loop.create_task(self._await_answer(answer)))

    def _track(self, task: asyncio.Task[None]) -> None:
        """Hold a request's task until it ends (stop() drains what is held)."""
        self.server.tasks.add(task)
        task.add_done_callback(self.server.tasks.discard)

    def _on_settled(self, response: Response | None, error: BaseException | None) -> None:
        if error is not None:
            self._failed(error)
            return
        assert response is not None
        streaming = self._respond(response, False)
        if streaming is not None:
            self._track(self.loop.create_task(streaming))

    async def _await_answer(self, answer: Awaitable[Response]) -> None:
        try:
            response = await answer
        except Exception as exc:
            self._failed(exc)
            return
        streaming = self._respond(response, False)
        if streaming is not None:
            await streaming

    def _failed(self, exc: BaseException) -> None:
        """Answer the request whose handler raised `exc`."""
        if isinstance(exc, ProxyError):
            self._respond(exc.response(), isinstance(exc, ClientTimeout))
        elif isinstance(exc, BodyTooLarge):
            self._respond(ProxyError(str(exc), 413, "body_too_large").response(), True)
        elif isinstance(exc, ClientGone):
            self._answered(499, False)  # not kept alive: closes the connection
        else:
            log.error("request handler failed", exc_info=exc)
            self._respond(ProxyError("internal error", 500, "internal_error").response(), False)

    def _respond(self, response: Response, close_after: bool) -> Coroutine[Any, Any, None] | None:
        """Send the handler's response: at once when its body is whole, else the coroutine that
        streams it (the caller runs it)."""
        body = self.request_body
        if body is not None and isinstance(body.error, ProxyError):
            # The request body turned out malformed (or too slow): that is the answer, whatever the
            # handler made of the part it saw (an upstream's early answer, a failed write upstream).
            response, close_after = body.error.response(), True
        if body is not None and not body.done:
            close_after = True  # the rest of the upload would be read as the next request
        exchange = self.exchange
        assert exchange is not None
        if exchange.response_fields:
            response.headers.extend(exchange.response_fields)
        ends_here = self.broken and self.deferred is None  # else the deferred answer closes it
        keep_alive = self.keep_alive and not close_after and not self.server.draining and not ends_here
        request = exchange.request
        if not isinstance(response.body, bytes):
            return self._stream(request, response, keep_alive)
        status = response.status
        try:  # the usual case: one write, no coroutine for it
            keep_alive = self._send_whole(request, response, keep_alive)
        except Exception:
            log.exception("writing the response failed")
            keep_alive = False
            status = 599 if status < 500 else status
        self._answered(status, keep_alive)
        return None

    async def _stream(self, request: Request, response: Response, keep_alive: bool) -> None:
        status = response.status
        try:
            keep_alive = await self._send(request, response, keep_alive)
        except Exception:
            log.exception("writing the response failed")
            keep_alive = False
            status = 599 if status < 500 else status
        self._answered(status, keep_alive)

    def _answered(self, status: int, keep_alive: bool) -> None:
        """The request is answered (or given up): account for it, then go on to the next one."""
        server = self.server
        if self.admitted:
            self.admitted = False
            server.inflight -= 1
        exchange = self.exchange
        assert exchange is not None
        # Spans and metrics after the answers of the requests that arrived with this one: under a
        # burst their responses go out first (the completions cost ~10 us a request).
        server.completions.add(self.loop, exchange, status)
        self.exchange = self.request_body = None
        self.served += 1
        self.busy = False
        if server.draining:
            server.note_answer()
        if not keep_alive:
            self._close()
        elif not self.dispatching:
            self._dispatch()

    def _head(self, request: Request, response: Response, keep_alive: bool) -> tuple[bytes, bool, bool]:
        """The response head, whether the body goes chunked, and whether the connection stays open."""
        body = response.body
        status = response.status
        head_only = request.method == "HEAD"
        tail = "" if "date" in response.headers else _Clock.date_line()
        chunked = False
        if isinstance(body, bytes):
            tail += f"content-length: {len(body)}\r\n"
        elif response.content_length is not None:
            tail += f"content-length: {response.content_length}\r\n"
        elif request.version == "1.1" and status not in (204, 304) and not head_only:
            tail += "transfer-encoding: chunked\r\n"
            chunked = True
        elif status not in (204, 304) and not head_only:
            keep_alive = False  # HTTP/1.0 without a length: the close delimits the body
        if not keep_alive:
            tail += "connection: close\r\n"
        head = message_head(_status_line(status, response.reason), response.headers.items(), tail + "\r\n")
        return head, chunked, keep_alive

    def _send_whole(self, request: Request, response: Response, keep_alive: bool) -> bool:
        """Write a response whose body is bytes in one write; returns whether the connection stays open."""
        head, _, keep_alive = self._head(request, response, keep_alive)
        if request.method != "HEAD":
            head += cast(bytes, response.body)
        if self.transport is not None and not self.closing:
            self.server.writes.write(self.loop, self.transport, head)
        return keep_alive

    async def _send(self, request: Request, response: Response, keep_alive: bool) -> bool:
        """Write a response with a streamed body; returns whether the connection can carry another request."""
        head, chunked, keep_alive = self._head(request, response, keep_alive)
        self._write(head)
        iterator = cast(Body, response.body).__aiter__()
        try:
            if request.method == "HEAD":
                return keep_alive
            async for chunk in iterator:
                if self.closing:
                    return False
                if chunk:
                    self._write(b"%x\r\n%b\r\n" % (len(chunk), chunk) if chunked else chunk)
                    if self.write_paused:
                        await self.wait_writable()
            if chunked:
                self._write(b"0\r\n\r\n")
        except ProxyError:
            # The status is already sent: abort so the client sees a truncated body, not a short one.
            if self.transport is not None:
                self.transport.abort()
            return False
        finally:
            await close_body(iterator)
        return keep_alive

    def _write(self, data: bytes | bytearray) -> None:
        if self.transport is not None and not self.closing:
            if self.server.writes:
                self.server.writes.flush()  # an answer held for this pass goes first
            self.transport.write(data)

    # errors and timeouts
    def _parse_failed(self, message: str) -> None:
        if self.body is not None and not self.body.done:
            self.body.finish(ProxyError(f"malformed request body: {message}", 400, "bad_request"))
        self._reject(400, "bad_request", f"malformed request: {message}")

    def _reject(self, status: int, code: str, message: str) -> None:
        """Answer a request we could not parse or accept, then close the connection."""
        if self.server.on_reject is not None:
            self.server.on_reject(status, code)
        if self.busy or self.pending:
            # A request is in flight. If its body was malformed, its handler answers with the body's
            # error; otherwise the bad bytes start a later request, answered after those before it.
            # Either way the connection closes then and nothing more is parsed.
            self.broken = True
            self.pause_reading()
            if self.body is None:
                self.deferred = (status, code, message)
            return
        self._answer_error(status, code, message)

    def _answer_error(self, status: int, code: str, message: str) -> None:
        response = ProxyError(message, status, code).response()
        assert isinstance(response.body, bytes)
        self._write_error(status, response.body, [])
        self._close()

    def _write_error(self, status: int, body: bytes, extra: Iterable[tuple[str, str]]) -> None:
        """Write a complete JSON error answer that ends the connection (outside any handler)."""
        head = bytearray(_status_line(status, unknown="Error").encode("latin-1"))
        for name, value in extra:
            if name not in ("content-type", "content-length"):
                head += f"{name}: {value}\r\n".encode("latin-1")
        head += b"content-type: application/json\r\ncontent-length: %d\r\nconnection: close\r\n\r\n" % len(body)
        self._write(head + body)

    def _close(self) -> None:
        if self.transport is not None and not self.closing:
            self.closing = True
            if self.server.writes:
                self.server.writes.flush()  # the last answer is delivered before the close
            self.transport.close()

    def _arm_timer(self, delay: float) -> None:
        self.timer = self.loop.call_later(delay, self._on_timer)

    def _on_timer(self) -> None:
        """One timer per connection, re-armed lazily: cheaper than one per request."""
        self.timer = None
        if self.closing:
            return
        now = self.loop.time()
        if self.in_head:
            deadline = self.head_started + self.limits.header_timeout_s
            if now >= deadline:
                self._reject(408, "request_timeout", "client sent the request headers too slowly")
                return
        elif self.busy or self.body is not None:
            deadline = now + self.tick  # handler running; body reads time themselves out
        else:
            deadline = self.idle_since + self.limits.idle_timeout_s
            if now >= deadline:
                if self.served == 0:
                    self._reject(408, "request_timeout", "no request received")
                else:
                    self._close()  # a quiet keep-alive connection just ends
                return
        self._arm_timer(min(max(deadline - now, 0.01), self.tick))


class Completions:
    """Exchanges to complete (spans, metrics) at the end of the loop pass that answered them: one
    callback a pass rather than one a request, and after that pass's responses are written."""

    def __init__(self) -> None:
        self._held: list[tuple[Exchange, int]] = []

    def add(self, loop: asyncio.AbstractEventLoop, exchange: Exchange, status: int) -> None:
        """Complete `exchange` with `status` at the end of this pass of `loop`."""
        if not self._held:
            loop.call_soon(self.run)
        self._held.append((exchange, status))

    def run(self) -> None:
        """Complete every held exchange (a failing completion is logged; the others still run)."""
        held, self._held = self._held, []
        for exchange, status in held:
            try:
                exchange.complete(status)
            except Exception:
                log.exception("completing a request failed")


class ClientGone(Exception):
    """The client disconnected while its request was in flight."""


class HttpServer:
    """A listening socket that serves every connection with `handler` (a policy chain)."""

    def __init__(
        self, handler: CallNext, host: str = "127.0.0.1", port: int = 0, limits: ServerLimits | None = None,
        ssl: ssl_module.SSLContext | None = None, on_reject: RejectHook | None = None, backlog: int = 1024,
        on_shed: ShedHook | None = None, reuse_port: bool = False,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.limits = limits or ServerLimits()
        self.ssl = ssl
        self.on_reject = on_reject
        self.on_shed = on_shed
        self.inflight = 0  # admitted requests being handled (admission control)
        self.backlog = backlog
        self.reuse_port = reuse_port  # several worker processes listen on one port; the kernel spreads connections
        self.connections: set[HttpServerProtocol] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # requests awaited (or streamed) by a task
        self.completions = Completions()  # exchanges to complete at the end of each loop pass
        self.draining = False
        self.drained: asyncio.Event | None = None  # made by stop(): set when nothing is in flight
        self._server: asyncio.Server | None = None
        self.writes = WriteBatch()  # whole answers, written at the end of each loop pass

    def note_answer(self) -> None:
        """While stopping: set `drained` once no connection has a request in flight."""
        if self.drained is not None and not any(conn.busy for conn in self.connections):
            self.drained.set()

    def shed(self, reason: str) -> None:
        """Count one request or connection refused by admission control."""
        if self.on_shed is not None:
            self.on_shed(reason)

    async def start(self) -> None:
        """Bind and listen; `self.port` is the bound port afterwards (port 0 picks a free one)."""
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            lambda: HttpServerProtocol(self), self.host, self.port, ssl=self.ssl, backlog=self.backlog,
            reuse_address=True, reuse_port=self.reuse_port or None,
        )
        # Any: uvloop's Server.sockets is a list, asyncio's a tuple (compiled code checks the type)
        self.port = cast(Any, self._server).sockets[0].getsockname()[1]
        settle_heap()
        raise_open_files_limit()

    async def stop(self, timeout_s: float = 10.0) -> None:
        """Stop listening, let in-flight requests finish (up to `timeout_s`), then close everything."""
        self.draining = True
        if self._server is not None:
            self._server.close()
        for conn in list(self.connections):
            if not conn.busy:
                conn._close()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout_s
        if self.tasks:
            await asyncio.wait(list(self.tasks), timeout=timeout_s)
        # Requests answered from callbacks have no task to wait for: their connections are busy.
        self.drained = asyncio.Event()
        self.note_answer()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self.drained.wait(), max(deadline - loop.time(), 0.0))
        for task in list(self.tasks):
            task.cancel()
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()
        if self._server is not None:
            await self._server.wait_closed()
