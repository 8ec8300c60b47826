"""Auditor keys and certificates: make them, load them, describe them.

The report's cover names the auditor from the signing certificate, so the
facts a reader needs about it (who, which organisation, self-signed or a
demo key) are read here from the certificate itself, never from arguments.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from asn1crypto import keys as asn1_keys
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import NameOID
from pyhanko.sign.signers import SimpleSigner
from pyhanko_certvalidator.registry import SimpleCertificateStore

from audit.atomic import write_atomic
from audit.errors import InputError
from audit.files import LIMITS, check_name, read_file

DEMO_LABEL = "DEMO KEY — not an auditor identity"
"""Organisation of demo certificates; the report shows it and says it is no identity."""

RSA_BITS = 3072
"""RSA rather than EC: every PDF reader, old Acrobat included, validates it."""

VALIDITY_DAYS = 3650
"""Without a time stamp, validators check the certificate at verification time,
and disputes last years; a short validity would make honest reports fail."""


@dataclass(frozen=True)
class CertificateInfo:
    """What a reader of the report needs to know about the signing certificate."""

    subject: str
    common_name: str | None
    organisation: str | None
    self_signed: bool
    demo: bool
    sha256_fingerprint: str
    not_before: dt.datetime
    not_after: dt.datetime

    @classmethod
    def of(cls, cert: x509.Certificate) -> CertificateInfo:
        organisation = _name_attribute(cert.subject, NameOID.ORGANIZATION_NAME)
        return cls(
            subject=display_name(cert.subject),
            common_name=_name_attribute(cert.subject, NameOID.COMMON_NAME),
            organisation=organisation,
            self_signed=is_self_signed(cert),
            demo=organisation == DEMO_LABEL,
            sha256_fingerprint=cert.fingerprint(hashes.SHA256()).hex(),
            not_before=cert.not_valid_before_utc,
            not_after=cert.not_valid_after_utc,
        )


@dataclass(frozen=True)
class AuditorKey:
    """A private key with its certificate (and chain), ready for :func:`sign_pdf`."""

    signer: SimpleSigner
    certificate: x509.Certificate

    @property
    def info(self) -> CertificateInfo:
        return CertificateInfo.of(self.certificate)

    @property
    def certificate_pem(self) -> bytes:
        """The certificate as PEM, for the other side's ``--trust``."""
        return self.certificate.public_bytes(serialization.Encoding.PEM)


@dataclass(frozen=True)
class KeygenResult:
    pkcs12_path: Path
    certificate_path: Path
    info: CertificateInfo


def is_self_signed(cert: x509.Certificate) -> bool:
    """Issuer is the subject and the certificate's own key verifies its signature."""
    if cert.issuer != cert.subject:
        return False
    try:
        cert.verify_directly_issued_by(cert)
    except (InvalidSignature, ValueError, TypeError):
        return False
    return True


def keygen(
    name: str,
    org: str,
    out_dir: str | Path,
    passphrase: str,
    *,
    email: str | None = None,
    days: int = VALIDITY_DAYS,
) -> KeygenResult:
    """Make a self-signed auditor certificate; write ``<name>.p12`` and ``<name>.cert.pem``.

    The PKCS#12 file holds key and certificate, encrypted with ``passphrase``;
    the PEM certificate is what the other side passes as ``--trust``.  Existing
    files are never overwritten: losing an auditor's key cannot be undone.
    """
    name, org = name.strip(), org.strip()
    if not passphrase:
        raise InputError("a non-empty passphrase is required to protect the PKCS#12 file")
    if not name or not org:
        raise InputError("keygen needs a non-empty --name and --org")
    out = Path(out_dir)
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode().lower()
    stem = re.sub(r"[^a-z0-9]+", "-", ascii_name).strip("-") or "auditor"
    p12_path, cert_path = out / f"{stem}.p12", out / f"{stem}.cert.pem"
    for path in (p12_path, cert_path):
        if check_name(path).exists():
            raise InputError(f"{path} already exists; refusing to overwrite a key or certificate")
    out.mkdir(parents=True, exist_ok=True)
    key, cert = _self_signed(name, org, email, days)
    p12 = pkcs12.serialize_key_and_certificates(
        name.encode(), key, cert, None, serialization.BestAvailableEncryption(passphrase.encode())
    )
    write_atomic(p12_path, p12, mode=0o600)
    write_atomic(cert_path, cert.public_bytes(serialization.Encoding.PEM))
    return KeygenResult(p12_path, cert_path, CertificateInfo.of(cert))


def demo_key() -> AuditorKey:
    """An ephemeral in-memory key whose certificate says it is a demo key, not an identity."""
    key, cert = _self_signed("audit demo signer", DEMO_LABEL, None, VALIDITY_DAYS)
    return _auditor_key(key, cert, ())


def load_pkcs12(path: str | Path, passphrase: str | None) -> AuditorKey:
    """Load a signer from a PKCS#12 (.p12/.pfx) file; no or an empty passphrase for an unencrypted one."""
    data = read_file(path, limit=LIMITS["key"], what="PKCS#12")
    try:
        key, cert, chain = pkcs12.load_key_and_certificates(data, passphrase.encode() if passphrase else None)
    except (ValueError, TypeError) as exc:
        raise InputError(f"cannot open PKCS#12 file {path}: wrong passphrase or not a PKCS#12 file") from exc
    if key is None or cert is None:
        raise InputError(f"PKCS#12 file {path} must hold a private key and its certificate")
    return _auditor_key(key, cert, chain)


def load_pem(key_path: str | Path, cert_path: str | Path, passphrase: str | None = None) -> AuditorKey:
    """Load a signer from a PEM (or DER) private key and a PEM certificate file.

    The certificate file may continue with the issuing chain (signer first);
    the chain is embedded in the signature so validators can build the path.
    """
    data = read_file(key_path, limit=LIMITS["key"], what="key")
    load = serialization.load_pem_private_key if b"-----BEGIN" in data else serialization.load_der_private_key
    try:
        key = load(data, passphrase.encode() if passphrase else None)
    except TypeError as exc:
        hint = "needs a passphrase" if passphrase is None else "is not encrypted; give no passphrase"
        raise InputError(f"key file {key_path} {hint}") from exc
    except ValueError as exc:
        raise InputError(f"cannot open key file {key_path}: wrong passphrase or not a PEM/DER private key") from exc
    cert, *chain = load_certificates([cert_path])
    return _auditor_key(key, cert, chain)


def load_certificates(paths: Iterable[str | Path]) -> list[x509.Certificate]:
    """All certificates in the given PEM (one or more each) or DER files, e.g. ``--trust`` roots."""
    certs: list[x509.Certificate] = []
    for path in paths:
        data = read_file(path, limit=LIMITS["key"], what="certificate")
        try:
            pem = b"-----BEGIN" in data
            certs += x509.load_pem_x509_certificates(data) if pem else [x509.load_der_x509_certificate(data)]
        except ValueError as exc:
            raise InputError(f"{path} is not a PEM or DER certificate: {exc}") from exc
    return certs


def _auditor_key(
    key: CertificateIssuerPrivateKeyTypes, cert: x509.Certificate, chain: Iterable[x509.Certificate]
) -> AuditorKey:
    """Check that ``key`` and ``cert`` can make a signature validators accept, then wrap them."""
    der = serialization.Encoding.DER
    spki = serialization.PublicFormat.SubjectPublicKeyInfo
    if key.public_key().public_bytes(der, spki) != cert.public_key().public_bytes(der, spki):
        raise InputError(f"the private key does not belong to the certificate of {display_name(cert.subject)}")
    now = dt.datetime.now(dt.timezone.utc)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise InputError(
            f"certificate of {display_name(cert.subject)} is valid only from "
            f"{cert.not_valid_before_utc:%Y-%m-%d} to {cert.not_valid_after_utc:%Y-%m-%d}"
        )
    try:
        usage = cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        usage = None
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        raise InputError("the certificate's key usage allows neither digital signature nor non-repudiation")
    store = SimpleCertificateStore()
    store.register_multiple(asn1_x509.Certificate.load(c.public_bytes(der)) for c in chain)
    signer = SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(der)),
        signing_key=asn1_keys.PrivateKeyInfo.load(
            key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
        ),
        cert_registry=store,
    )
    return AuditorKey(signer, cert)


def _self_signed(name: str, org: str, email: str | None, days: int) -> tuple[rsa.RSAPrivateKey, x509.Certificate]:
    """RSA key and self-signed end-entity certificate for document signing."""
    key = rsa.generate_private_key(public_exponent=65537, key_size=RSA_BITS)
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, name), x509.NameAttribute(NameOID.ORGANIZATION_NAME, org)]
    if email:
        attributes.append(x509.NameAttribute(NameOID.EMAIL_ADDRESS, email))
    subject = x509.Name(attributes)
    now = dt.datetime.now(dt.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(key.public_key()), critical=False)
    )
    if email:
        builder = builder.add_extension(x509.SubjectAlternativeName([x509.RFC822Name(email)]), critical=False)
    return key, builder.sign(key, hashes.SHA256())


def display_name(name: x509.Name) -> str:
    """RFC 4514 text with ``E=`` for e-mail, as pdfsig and most PDF readers print it."""
    return name.rfc4514_string({NameOID.EMAIL_ADDRESS: "E"})


def _name_attribute(name: x509.Name, oid: x509.ObjectIdentifier) -> str | None:
    values = name.get_attributes_for_oid(oid)
    return str(values[0].value) if values else None
