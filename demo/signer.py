"""The demo's token issuer: an ES256 key pair; the auth service signs, the gateway verifies via JWKS."""

from __future__ import annotations

import json
import secrets
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm


class Signer:
    """A fresh P-256 key per run (never written to disk); only the public JWKS leaves the process."""

    algorithm = "ES256"

    def __init__(self) -> None:
        self._key = ec.generate_private_key(ec.SECP256R1())
        self.kid = f"demo-{secrets.token_hex(4)}"

    def sign(self, claims: dict[str, Any]) -> str:
        """A compact JWT over `claims`."""
        return jwt.encode(claims, self._key, algorithm=self.algorithm, headers={"kid": self.kid})

    def jwks(self) -> dict[str, Any]:
        """The public key set the gateway loads (`jwks_file`)."""
        jwk = json.loads(ECAlgorithm.to_jwk(self._key.public_key()))
        jwk.update({"kid": self.kid, "alg": self.algorithm, "use": "sig"})
        return {"keys": [jwk]}
