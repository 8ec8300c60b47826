"""Certificates for the trust tests, made with ``cryptography``, and signing at a chosen moment.

Every certificate case of the trust checks is built here: a CA, a non-CA
issuer, a leaf with chosen validity and key usage, a certificate with the
same subject as another but a different key.  Keys are EC P-256 (fast).
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
from asn1crypto import keys as asn1_keys
from asn1crypto import tsp
from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from pyhanko.sign.signers import SimpleSigner, pdf_signer
from pyhanko.sign.timestamps import DummyTimeStamper
from pyhanko_certvalidator.registry import SimpleCertificateStore

from audit.signature import AuditorKey

SIGNING = frozenset({"digital_signature", "content_commitment"})
"""Key usage of a document-signing leaf (content_commitment is nonRepudiation)."""
CA_USAGE = frozenset({"digital_signature", "key_cert_sign", "crl_sign"})
KEY_USAGE_FIELDS = (
    "digital_signature", "content_commitment", "key_encipherment", "data_encipherment",
    "key_agreement", "key_cert_sign", "crl_sign", "encipher_only", "decipher_only",
)
NOW = dt.datetime.now(dt.timezone.utc).replace(microsecond=0)


def make_cert(
    cn: str,
    issuer: tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate] | None = None,
    *,
    ca: bool = False,
    usage: Iterable[str] | None = None,
    not_before: dt.datetime | None = None,
    not_after: dt.datetime | None = None,
    org: str | None = None,
    eku: x509.ObjectIdentifier | None = None,
    key: CertificateIssuerPrivateKeyTypes | None = None,
) -> tuple[CertificateIssuerPrivateKeyTypes, x509.Certificate]:
    """A key and its certificate, self-signed when ``issuer`` (key, certificate) is None.

    ``usage`` names the keyUsage bits set (default: CA usage for a CA, signing
    usage otherwise; an empty set omits the extension); the validity defaults
    to a day before now until 30 days after; ``eku`` adds a critical
    extended key usage.
    """
    key = key or ec.generate_private_key(ec.SECP256R1())
    attributes = [x509.NameAttribute(NameOID.COMMON_NAME, cn)]
    if org:
        attributes.append(x509.NameAttribute(NameOID.ORGANIZATION_NAME, org))
    name = x509.Name(attributes)
    issuer_key, issuer_cert = issuer or (key, None)
    usage = set(CA_USAGE if ca else SIGNING) if usage is None else set(usage)
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer_cert.subject if issuer_cert else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(not_before or NOW - dt.timedelta(days=1))
        .not_valid_after(not_after or NOW + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    )
    if usage:
        builder = builder.add_extension(
            x509.KeyUsage(**{field: field in usage for field in KEY_USAGE_FIELDS}), critical=True
        )
    if eku is not None:
        builder = builder.add_extension(x509.ExtendedKeyUsage([eku]), critical=True)
    return key, builder.sign(issuer_key, hashes.SHA256())


def private_key_info(key: CertificateIssuerPrivateKeyTypes) -> asn1_keys.PrivateKeyInfo:
    der = serialization.Encoding.DER
    pkcs8 = key.private_bytes(der, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    return asn1_keys.PrivateKeyInfo.load(pkcs8)


def signing_key(key: CertificateIssuerPrivateKeyTypes, cert: x509.Certificate, *chain: x509.Certificate) -> AuditorKey:
    """An :class:`AuditorKey` without the loaders' checks, so that bad certificates can sign too."""
    der = serialization.Encoding.DER
    store = SimpleCertificateStore()
    store.register_multiple(asn1_x509.Certificate.load(c.public_bytes(der)) for c in chain)
    signer = SimpleSigner(
        signing_cert=asn1_x509.Certificate.load(cert.public_bytes(der)),
        signing_key=private_key_info(key),
        cert_registry=store,
    )
    return AuditorKey(signer, cert)


@pytest.fixture
def signing_clock(monkeypatch):
    """Set the moment pyHanko writes as the signing time (/M): backdating is what a signer can do."""

    def set_clock(moment: dt.datetime) -> None:
        class Clock(dt.datetime):
            @classmethod
            def now(cls, tz=None):
                return moment.astimezone(tz)

        monkeypatch.setattr(pdf_signer, "datetime", Clock)

    return set_clock


@contextmanager
def tsa_server(at: dt.datetime | None = None) -> Iterator[tuple[str, x509.Certificate]]:
    """A time-stamp authority on 127.0.0.1 answering RFC 3161 requests; yields (url, its certificate).

    Its certificate is self-signed, not a CA, and valid from 60 days before
    now; ``at`` fixes the time it attests (default: the time of the request).
    """
    tsa_key = rsa.generate_private_key(65537, 2048)  # pyHanko's DummyTimeStamper signs with RSA only
    _, cert = make_cert(
        "Test TSA", usage={"digital_signature"}, eku=ExtendedKeyUsageOID.TIME_STAMPING, key=tsa_key,
        not_before=NOW - dt.timedelta(days=60),
    )
    stamper = DummyTimeStamper(
        tsa_cert=asn1_x509.Certificate.load(cert.public_bytes(serialization.Encoding.DER)),
        tsa_key=private_key_info(tsa_key),
        fixed_dt=at,
    )

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self):
            request = tsp.TimeStampReq.load(self.rfile.read(int(self.headers["Content-Length"])))
            body = stamper.request_tsa_response(request).dump()
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/", cert
    finally:
        server.shutdown()
        server.server_close()
