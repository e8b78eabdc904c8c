"""Why a collector request is refused, with the OTLP status each protocol answers with."""

from __future__ import annotations

import grpc


class RequestRejected(Exception):
    """A whole export request refused; `http_status` and `grpc_code` say how to answer it."""

    http_status = 400
    grpc_code = grpc.StatusCode.INVALID_ARGUMENT
    reason = "invalid"

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidPayload(RequestRejected):
    """Undecodable or invalid payload (HTTP 400 / INVALID_ARGUMENT); retrying will not help."""


class UnsupportedMediaType(RequestRejected):
    """A Content-Type other than OTLP protobuf or JSON (HTTP 415)."""

    http_status = 415
    reason = "unsupported_media_type"


class PayloadTooLarge(RequestRejected):
    """A body above the configured limit, before or after decompression (HTTP 413)."""

    http_status = 413
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "too_large"


class Backpressure(RequestRejected):
    """The span log cannot take the batch now; the client should retry after `retry_after_s`."""

    http_status = 503
    grpc_code = grpc.StatusCode.UNAVAILABLE
    reason = "span_log_unavailable"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


class Busy(Backpressure):
    """The span log or the collector's queue is full (HTTP 429 / RESOURCE_EXHAUSTED)."""

    http_status = 429
    grpc_code = grpc.StatusCode.RESOURCE_EXHAUSTED
    reason = "span_log_full"
