"""Throwaway certificates with chosen names, lifetime and OCSP URL, for the certificate tests."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import AuthorityInformationAccessOID, NameOID


@dataclass(frozen=True)
class Issued:
    certificate: x509.Certificate
    cert_pem: bytes
    key_pem: bytes

    def write(self, directory: Path) -> tuple[Path, Path]:
        """server.pem and server-key.pem (0600) in directory."""
        directory.mkdir(parents=True, exist_ok=True)
        cert_file, key_file = directory / "server.pem", directory / "server-key.pem"
        cert_file.write_bytes(self.cert_pem)
        key_file.write_bytes(self.key_pem)
        key_file.chmod(0o600)
        return cert_file, key_file


def self_signed(
    names: tuple[str, ...],
    *,
    not_before: datetime.datetime | None = None,
    lifetime: datetime.timedelta = datetime.timedelta(days=90),
    ocsp_url: str | None = None,
) -> Issued:
    start = not_before or datetime.datetime.now(datetime.UTC) - datetime.timedelta(minutes=5)
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, names[0] if names else "none")])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(start + lifetime)
    )
    if names:
        alternative_names = [x509.DNSName(name) for name in names]
        builder = builder.add_extension(x509.SubjectAlternativeName(alternative_names), False)
    if ocsp_url:
        access = x509.AccessDescription(
            AuthorityInformationAccessOID.OCSP, x509.UniformResourceIdentifier(ocsp_url)
        )
        builder = builder.add_extension(x509.AuthorityInformationAccess([access]), False)
    certificate = builder.sign(key, hashes.SHA256())
    key_pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return Issued(certificate, certificate.public_bytes(serialization.Encoding.PEM), key_pem)
