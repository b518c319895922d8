"""The small PKI a local control plane needs: one CA, serving and client certificates, a service-account key.

Keys are ECDSA P-256: generated in microseconds (an RSA key takes a noticeable part of a second on a busy machine),
and accepted everywhere Kubernetes takes a key -- TLS serving, client certificates, and service-account token
signing (ES256).
"""

from __future__ import annotations

import datetime
import ipaddress
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["CertificateAuthority", "KeyPair", "new_private_key", "private_key_pem", "public_key_pem"]

# Long enough for any test session or sandbox, short enough that a leaked file is not a forever-credential.
VALIDITY = datetime.timedelta(days=7)
# Clocks of freshly started processes can disagree by a little; never be "not yet valid".
BACKDATE = datetime.timedelta(minutes=5)

PrivateKey = ec.EllipticCurvePrivateKey


def new_private_key() -> PrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def private_key_pem(key: PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )


def public_key_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


@dataclass(frozen=True)
class KeyPair:
    """A PEM certificate and its PEM private key."""

    cert_pem: bytes
    key_pem: bytes

    def write(self, cert_path: Path, key_path: Path) -> None:
        cert_path.write_bytes(self.cert_pem)
        key_path.touch(mode=0o600)
        key_path.write_bytes(self.key_pem)


def _name(common_name: str, organizations: Iterable[str] = ()) -> x509.Name:
    attributes = [x509.NameAttribute(NameOID.ORGANIZATION_NAME, org) for org in organizations]
    attributes.append(x509.NameAttribute(NameOID.COMMON_NAME, common_name))
    return x509.Name(attributes)


def _builder(
    subject: x509.Name, issuer: x509.Name, public_key: ec.EllipticCurvePublicKey, *, ca: bool
) -> x509.CertificateBuilder:
    """What the CA and leaf certificates share: names, key, validity, and the CA-or-leaf constraints and usages."""
    now = datetime.datetime.now(datetime.UTC)
    return (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer)
        .public_key(public_key)
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE)
        .not_valid_after(now + VALIDITY)
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=False,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=ca,
                crl_sign=ca,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
    )


class CertificateAuthority:
    """A self-signed CA that signs the serving certificate and the client certificates of one control plane."""

    def __init__(self, common_name: str = "chaoscontour-ca") -> None:
        self._key = new_private_key()
        subject = _name(common_name)
        self._cert = (
            _builder(subject, subject, self._key.public_key(), ca=True)
            .add_extension(x509.SubjectKeyIdentifier.from_public_key(self._key.public_key()), critical=False)
            .sign(self._key, hashes.SHA256())
        )

    @classmethod
    def from_pem(cls, cert_pem: bytes, key_pem: bytes) -> CertificateAuthority:
        """The CA of an existing control plane (its ``ca.crt`` and ``ca.key``), to sign more client certificates
        (a node's kubelet and kube-proxy)."""
        key = serialization.load_pem_private_key(key_pem, password=None)
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise ValueError("the CA key is not an ECDSA key, as this module writes them")
        ca = cls.__new__(cls)
        ca._key = key
        ca._cert = x509.load_pem_x509_certificate(cert_pem)
        return ca

    @property
    def key_pair(self) -> KeyPair:
        return KeyPair(self._cert.public_bytes(serialization.Encoding.PEM), private_key_pem(self._key))

    def issue(
        self,
        common_name: str,
        *,
        organizations: Sequence[str] = (),
        server: bool = False,
        client: bool = False,
        dns_names: Iterable[str] = (),
        ip_addresses: Iterable[str] = (),
    ) -> KeyPair:
        """Sign a leaf certificate for TLS serving (``server``) and/or client authentication (``client``).

        For a client certificate, Kubernetes reads the user name from the common name and the groups from the
        organizations (``O=system:masters`` is the admin group).
        """
        key = new_private_key()
        usages = ([ExtendedKeyUsageOID.SERVER_AUTH] if server else []) + (
            [ExtendedKeyUsageOID.CLIENT_AUTH] if client else []
        )
        if not usages:
            raise ValueError("a certificate must be for serving, for clients, or both")
        builder = (
            _builder(_name(common_name, organizations), self._cert.subject, key.public_key(), ca=False)
            .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
            .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(self._key.public_key()), critical=False)
        )
        names: list[x509.GeneralName] = [x509.DNSName(name) for name in dict.fromkeys(dns_names)]
        names += [x509.IPAddress(ipaddress.ip_address(ip)) for ip in dict.fromkeys(ip_addresses)]
        if names:
            builder = builder.add_extension(x509.SubjectAlternativeName(names), critical=False)
        cert = builder.sign(self._key, hashes.SHA256())
        return KeyPair(cert.public_bytes(serialization.Encoding.PEM), private_key_pem(key))
