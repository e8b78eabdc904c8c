"""Service identities: valid service names and their SPIFFE IDs (`spiffe://<trust domain>/<service>`).

Kept free of heavy imports: the sidecar needs these at run time, the CA code only for `certs`.
"""

from __future__ import annotations

import re

from gatewatch.errors import ConfigError

DEFAULT_TRUST_DOMAIN = "gatewatch.local"
SERVICE_NAME = re.compile(r"^[a-z0-9]([a-z0-9._-]{0,61}[a-z0-9])?$")


def spiffe_id(service: str, trust_domain: str = DEFAULT_TRUST_DOMAIN) -> str:
    """The URI SAN that names `service` in `trust_domain`."""
    return f"spiffe://{trust_domain}/{service}"


def check_service_name(service: str) -> str:
    """Return `service` if it is a valid identity (lowercase DNS-label-like), else raise ConfigError."""
    if not SERVICE_NAME.match(service):
        raise ConfigError(f"service name {service!r}: use lowercase letters, digits, '.', '_' or '-' (max 63)")
    return service
