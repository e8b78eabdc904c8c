"""A local certificate authority for sidecar mTLS (`gatewatch certs init|issue`).

The CA signs one certificate per service; the service identity is a URI SAN in SPIFFE form
(`spiffe://<trust domain>/<service>`), which sidecars read from the peer certificate to decide
who is calling, plus the service name as a DNS SAN, which callers verify as the TLS server name.
Keys are ECDSA P-256 (fast handshakes) and written with mode 0600.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import re
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from gatewatch.errors import ConfigError
from proxy.spiffe import DEFAULT_TRUST_DOMAIN, check_service_name, spiffe_id

__all__ = ["DEFAULT_TRUST_DOMAIN", "IssuedCert", "init_ca", "issue", "load_ca", "spiffe_id", "trust_domain_of"]

CA_CERT, CA_KEY = "ca.pem", "ca.key"
TRUST_DOMAIN = re.compile(r"^[a-z0-9]([a-z0-9.-]{0,251}[a-z0-9])?$")


@dataclass(frozen=True, slots=True)
class IssuedCert:
    """Paths of a written certificate and its key."""

    cert: Path
    key: Path


def init_ca(directory: Path, trust_domain: str = DEFAULT_TRUST_DOMAIN, days: int = 3650,
            force: bool = False) -> IssuedCert:
    """Create the CA certificate and key in `directory`; refuses to overwrite unless `force`."""
    if not TRUST_DOMAIN.match(trust_domain):
        raise ConfigError(f"trust domain {trust_domain!r}: use a lowercase DNS name")
    paths = IssuedCert(directory / CA_CERT, directory / CA_KEY)
    if not force and (paths.cert.exists() or paths.key.exists()):
        raise ConfigError(f"a CA already exists in {directory} (pass --force to replace it)")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([
        x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gatewatch"),
        x509.NameAttribute(NameOID.COMMON_NAME, f"gatewatch CA {trust_domain}"),
    ])
    now = _now()
    cert = (
        x509.CertificateBuilder()
        .subject_name(name).issuer_name(name).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5)).not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=True, crl_sign=True, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        # The CA names its trust domain with a URI SAN (as SPIFFE allows), so `issue` can read it.
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(f"spiffe://{trust_domain}")]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    directory.mkdir(parents=True, exist_ok=True)
    _write(paths, cert, key)
    return paths


def issue(directory: Path, service: str, days: int = 365, hosts: tuple[str, ...] = ("localhost", "127.0.0.1"),
          out_dir: Path | None = None) -> IssuedCert:
    """Sign a certificate for `service` with the CA in `directory`; writes <service>.pem/.key."""
    check_service_name(service)
    ca_cert, ca_key = load_ca(directory)
    trust_domain = trust_domain_of(ca_cert)
    key = ec.generate_private_key(ec.SECP256R1())
    now = _now()
    sans: list[x509.GeneralName] = [x509.UniformResourceIdentifier(spiffe_id(service, trust_domain))]
    # The service name as a DNS SAN lets clients verify "this is payment" with plain hostname
    # checking (server_hostname=<service>) inside the handshake, with no extra hook.
    sans += [_host_name(host) for host in dict.fromkeys((service, *hosts))]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "gatewatch"),
            x509.NameAttribute(NameOID.COMMON_NAME, service),
        ]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(min(now + dt.timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(
            digital_signature=True, key_cert_sign=False, crl_sign=False, content_commitment=False,
            key_encipherment=False, data_encipherment=False, key_agreement=False,
            encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]),
                       critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    target = out_dir or directory
    target.mkdir(parents=True, exist_ok=True)
    paths = IssuedCert(target / f"{service}.pem", target / f"{service}.key")
    _write(paths, cert, key)
    return paths


def load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
    """The CA certificate and key from `directory`, or ConfigError saying to run `certs init`."""
    cert_path, key_path = directory / CA_CERT, directory / CA_KEY
    if not cert_path.exists() or not key_path.exists():
        raise ConfigError(f"no CA in {directory}: run `gatewatch certs init --dir {directory}` first")
    try:
        cert = x509.load_pem_x509_certificate(cert_path.read_bytes())
        key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
    except ValueError as exc:
        raise ConfigError(f"cannot read the CA in {directory}: {exc}") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise ConfigError(f"the CA key in {directory} is not an EC key")
    return cert, key


def trust_domain_of(ca_cert: x509.Certificate) -> str:
    """The trust domain the CA was created for (from its URI SAN)."""
    for uri in _uris(ca_cert):
        if uri.startswith("spiffe://"):
            return uri.removeprefix("spiffe://").strip("/")
    return DEFAULT_TRUST_DOMAIN


def _uris(cert: x509.Certificate) -> list[str]:
    try:
        names = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return []
    return list(names.get_values_for_type(x509.UniformResourceIdentifier))


def _host_name(host: str) -> x509.GeneralName:
    try:
        return x509.IPAddress(ipaddress.ip_address(host))
    except ValueError:
        return x509.DNSName(host)


def _now() -> dt.datetime:
    return dt.datetime.now(dt.UTC)


def _write(paths: IssuedCert, cert: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> None:
    pem_key = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    # Create the key file 0600 from the start, so it is never readable by others even briefly.
    fd = os.open(paths.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as handle:
        handle.write(pem_key)
    os.chmod(paths.key, 0o600)
    paths.cert.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
