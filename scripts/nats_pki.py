"""A private certificate authority for NATS on one machine: ``make cluster`` and the tests use it.

:func:`issue_pki` writes, into one directory, a CA and certificates signed by it (ECDSA P-256, PEM,
keys readable by the owner only)::

    pki = issue_pki(directory, servers=["n1", "n2"], clients=["gateway", "collector"])
    pki.ca                 # ca.pem: what clients and servers trust
    pki.server("n1")       # CertPair(cert=n1.pem, key=n1-key.pem): DNS localhost + IP 127.0.0.1,
                           # server *and* client auth (routes use the same certificate both ways)
    pki.client("gateway")  # CertPair(cert=gateway.pem, key=gateway-key.pem): client auth only

:func:`issue_ca` alone makes a second, unrelated CA: a certificate it signs is "untrusted" for the
first one's clients, which is how tests provoke a TLS verification failure. Production certificates
come from cert-manager instead (deploy/k8s/base/nats-certificates.yaml).
"""

from __future__ import annotations

import datetime
import ipaddress
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Final

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

# Long enough for a local cluster left running for weeks; short enough that a leaked key dies.
VALIDITY: Final = datetime.timedelta(days=90)
# Certificates are valid from a little in the past, so a clock a minute behind accepts them.
BACKDATE: Final = datetime.timedelta(minutes=5)
LOCAL_NAMES: Final = ("localhost",)
LOCAL_ADDRESSES: Final = ("127.0.0.1", "::1")


@dataclass(frozen=True, slots=True)
class CertPair:
    cert: Path
    key: Path


@dataclass(frozen=True, slots=True)
class Authority:
    """A CA on disk: its certificate and key files."""

    cert: Path
    key: Path

    def _load(self) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey]:
        certificate = x509.load_pem_x509_certificate(self.cert.read_bytes())
        key = serialization.load_pem_private_key(self.key.read_bytes(), password=None)
        assert isinstance(key, ec.EllipticCurvePrivateKey)
        return certificate, key

    def issue(
        self,
        directory: Path,
        name: str,
        *,
        server: bool,
        dns_names: Sequence[str] = LOCAL_NAMES,
        addresses: Sequence[str] = LOCAL_ADDRESSES,
    ) -> CertPair:
        """A leaf certificate ``<name>.pem`` (+ ``<name>-key.pem``) signed by this CA."""
        ca_cert, ca_key = self._load()
        key = ec.generate_private_key(ec.SECP256R1())
        usages = [ExtendedKeyUsageOID.CLIENT_AUTH]
        builder = _base_builder(name, key, issuer=ca_cert.subject)
        if server:
            usages.insert(0, ExtendedKeyUsageOID.SERVER_AUTH)
            alternatives: list[x509.GeneralName] = [x509.DNSName(dns) for dns in dns_names]
            alternatives += [x509.IPAddress(ipaddress.ip_address(address)) for address in addresses]
            builder = builder.add_extension(x509.SubjectAlternativeName(alternatives), critical=False)
        certificate = (
            builder.add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(_key_usage(ca=False), critical=True)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
            .sign(ca_key, hashes.SHA256())
        )
        return _write_pair(directory, name, certificate, key)


@dataclass(frozen=True, slots=True)
class Pki:
    """A CA and the certificates :func:`issue_pki` made with it, all in ``directory``."""

    directory: Path
    authority: Authority

    @property
    def ca(self) -> Path:
        return self.authority.cert

    def server(self, name: str) -> CertPair:
        return CertPair(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")

    def client(self, name: str) -> CertPair:
        return CertPair(self.directory / f"{name}.pem", self.directory / f"{name}-key.pem")


def issue_ca(directory: Path, name: str = "ca") -> Authority:
    """A self-signed CA, ``<name>.pem`` + ``<name>-key.pem`` in ``directory``."""
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"realtime-admin local {name}")])
    certificate = (
        _base_builder(f"realtime-admin local {name}", key, issuer=subject)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(ca=True), critical=True)
        .sign(key, hashes.SHA256())
    )
    pair = _write_pair(directory, name, certificate, key)
    return Authority(pair.cert, pair.key)


def issue_pki(directory: Path, *, servers: Sequence[str], clients: Sequence[str]) -> Pki:
    """A new CA in ``directory`` with a server certificate per name in ``servers`` and a client one
    per name in ``clients`` (existing files there are replaced)."""
    authority = issue_ca(directory)
    for name in servers:
        authority.issue(directory, name, server=True)
    for name in clients:
        authority.issue(directory, name, server=False)
    return Pki(directory, authority)


def _key_usage(*, ca: bool) -> x509.KeyUsage:
    """A CA signs certificates; a leaf signs handshakes (ECDHE key agreement)."""
    return x509.KeyUsage(
        digital_signature=True,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=not ca,
        key_cert_sign=ca,
        crl_sign=ca,
        encipher_only=False,
        decipher_only=False,
    )


def _base_builder(common_name: str, key: ec.EllipticCurvePrivateKey, *, issuer: x509.Name) -> x509.CertificateBuilder:
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(issuer)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    )


def _write_pair(directory: Path, name: str, certificate: x509.Certificate, key: ec.EllipticCurvePrivateKey) -> CertPair:
    directory.mkdir(parents=True, exist_ok=True)
    pair = CertPair(directory / f"{name}.pem", directory / f"{name}-key.pem")
    pair.cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_bytes = key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    descriptor = os.open(pair.key, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "wb") as handle:
        handle.write(key_bytes)
    pair.key.chmod(0o600)  # an existing file keeps its old mode through O_TRUNC
    return pair
