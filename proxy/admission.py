"""Admission-control settings shared by the gateway's and the sidecar's configs.

The mechanism lives in `proxy.server` (`ServerLimits`, `shed_response`); this is only its config
block, so both proxies accept the same knobs with the same validation.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from proxy.server import ServerLimits


class AdmissionConfig(BaseModel):
    """Global overload guard of one listener: beyond a limit it sheds with 503 + Retry-After."""

    model_config = ConfigDict(extra="forbid")

    max_inflight: int = Field(0, ge=0, description="requests handled at once; beyond: 503 (0 = no limit)")
    max_connections: int = Field(0, ge=0, description="open client connections; beyond: 503 + close (0 = no limit)")
    retry_after_s: int = Field(1, ge=0, description="Retry-After on load-shedding 503s")

    def server_limits(self) -> ServerLimits:
        """Listener limits with these admission knobs (other limits at their defaults)."""
        return ServerLimits(max_inflight=self.max_inflight, max_connections=self.max_connections,
                            retry_after_s=self.retry_after_s)
