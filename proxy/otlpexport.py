"""The proxies' OTLP/HTTP span exporter: batches encoded by `proxy.otlpwire`, POSTed on one
keep-alive connection by `proxy.httpposter` (no `http.client`: it imports `email`).

The SDK's `OTLPSpanExporter` pulls in requests, urllib3 and the protobuf classes (~8 MB of a
sidecar's RSS) to send bytes the proxies already have. This sends the same request the same way
(`Content-Type: application/x-protobuf`, OTLP headers/compression/certificate env vars, retries
with exponential backoff on 429/502/503/504 and connection errors, `Retry-After` honoured, one
deadline per batch).
"""

from __future__ import annotations

import logging
import os
import random
import ssl
import threading
import time
import zlib
from collections.abc import Mapping, Sequence

from proxy.httpposter import CONNECTION_ERRORS, HttpPoster, encode_head
from proxy.otlpwire import encode_request_of_encoded, encode_resource, encode_scope, encode_span
from proxy.policy import AttributeValue
from proxy.spans import FinishedSpan, parse_key_values

log = logging.getLogger(__name__)

RETRYABLE = frozenset({429, 502, 503, 504})
MAX_ATTEMPTS = 6  # as the SDK exporter: 1 s, 2 s, 4 s ... backoff, bounded by the deadline


def otlp_env(name: str) -> str | None:
    """`OTEL_EXPORTER_OTLP_TRACES_<name>`, else `OTEL_EXPORTER_OTLP_<name>` (the SDK's precedence)."""
    return os.environ.get(f"OTEL_EXPORTER_OTLP_TRACES_{name}") or os.environ.get(f"OTEL_EXPORTER_OTLP_{name}")


def _tls_context() -> ssl.SSLContext:
    """Server verification (custom CA) and client certificate from the OTLP env vars."""
    context = ssl.create_default_context(cafile=otlp_env("CERTIFICATE"))
    cert = otlp_env("CLIENT_CERTIFICATE")
    if cert:
        context.load_cert_chain(cert, otlp_env("CLIENT_KEY"))
    return context


def _valid_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """`headers` without those that cannot be sent (CR, LF or NUL in them), each dropped with a warning."""
    valid = {}
    for name, value in headers.items():
        try:
            encode_head("/", "-", {name: value}, 0)
        except ValueError:
            log.warning("OTLP header %r dropped: it holds a character HTTP does not allow", name)
            continue
        valid[name] = value
    return valid


def _retry_after_s(value: str | None) -> float | None:
    """Retry-After in delay-seconds form (an HTTP date is treated as absent: exponential backoff)."""
    try:
        return max(0.0, float(value)) if value else None
    except ValueError:
        return None


class WireOTLPSpanExporter:
    """OTLP/HTTP protobuf span exporter (a `proxy.spans.SpanExporter`): `ExportTraceServiceRequest`
    bytes from `proxy.otlpwire`, every span under the one resource and scope given here."""

    def __init__(self, endpoint: str, resource: Mapping[str, AttributeValue], scope: str,
                 headers: Mapping[str, str] | None = None, timeout: float = 10.0,
                 compression: str | None = None) -> None:
        self._resource = encode_resource(resource)
        self._scope = encode_scope(scope)
        self._headers = {"content-type": "application/x-protobuf", "user-agent": "gatewatch-proxy"}
        env_headers = parse_key_values(otlp_env("HEADERS") or "", "OTEL_EXPORTER_OTLP_HEADERS")
        self._headers.update({key.lower(): value for key, value in env_headers.items()})
        self._headers.update({key.lower(): value for key, value in (headers or {}).items()})
        self._headers = _valid_headers(self._headers)
        self._compression = (compression or otlp_env("COMPRESSION") or "none").strip().lower()
        if self._compression not in ("none", "gzip", "deflate"):
            log.warning("unsupported OTLP compression %r: sending uncompressed", self._compression)
            self._compression = "none"
        if self._compression != "none":
            self._headers["content-encoding"] = self._compression
        self._timeout_s = timeout
        self._poster = HttpPoster(endpoint, timeout, _tls_context() if endpoint.startswith("https:") else None)
        self._stopping = threading.Event()

    encode = staticmethod(encode_span)  # an EncodingSpanExporter: spans are encoded as they end

    def export(self, spans: Sequence[FinishedSpan]) -> bool:
        """Encode and send one batch, retrying transient failures until the deadline."""
        return self.export_encoded([encode_span(span) for span in spans])

    def export_encoded(self, spans: Sequence[bytes]) -> bool:
        """Send one batch of spans encoded by `encode`, retrying transient failures until the deadline."""
        if self._stopping.is_set():
            return False
        return self._send(self._compress(encode_request_of_encoded(spans, self._resource, self._scope)))

    def _compress(self, data: bytes) -> bytes:
        if self._compression == "gzip":
            import gzip  # only when configured: ~0.2 MB of a sidecar's RSS otherwise

            return gzip.compress(data)
        if self._compression == "deflate":
            return zlib.compress(data)
        return data

    def _send(self, body: bytes) -> bool:
        deadline = time.monotonic() + self._timeout_s
        for attempt in range(MAX_ATTEMPTS):
            remaining = deadline - time.monotonic()
            retry_after = None
            try:
                status, retry_after_header = self._poster.post(body, self._headers, max(remaining, 0.01))
            except CONNECTION_ERRORS as error:
                outcome: object = error
            else:
                if 200 <= status < 400:
                    return True
                outcome = f"HTTP {status}"
                if status not in RETRYABLE:
                    log.error("OTLP export to %s failed: %s", self._poster.url, outcome)
                    return False
                retry_after = _retry_after_s(retry_after_header)
            backoff = retry_after if retry_after is not None else 2**attempt * random.uniform(0.8, 1.2)
            if attempt + 1 == MAX_ATTEMPTS or backoff > deadline - time.monotonic():
                break
            log.warning("OTLP export to %s: %s, retrying in %.2fs", self._poster.url, outcome, backoff)
            if self._stopping.wait(backoff):
                break
        log.error("OTLP export to %s failed: deadline, retries or shutdown", self._poster.url)
        return False

    def shutdown(self) -> None:
        """Stop retrying and close the connection."""
        self._stopping.set()
        self._poster.close_connection()
