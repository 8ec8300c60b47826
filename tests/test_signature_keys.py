"""Auditor keys: keygen's certificate, loading signers, and one-line errors for bad key material."""

from __future__ import annotations

import datetime as dt
import stat

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from audit.atomic import write_atomic
from audit.errors import InputError
from audit.signature import DEMO_LABEL, demo_key, keygen, load_certificates, load_pem, load_pkcs12

PASSPHRASE = "s3cret passphrase"


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    out = tmp_path_factory.mktemp("keys")
    return keygen("Jane Q. Auditor", "Example Forensics Ltd", out, PASSPHRASE, email="jane@example.org")


def test_keygen_writes_a_private_pkcs12_and_a_public_pem(made):
    assert made.pkcs12_path.name == "jane-q-auditor.p12"
    assert stat.S_IMODE(made.pkcs12_path.stat().st_mode) == 0o600
    assert made.certificate_path.read_bytes().startswith(b"-----BEGIN CERTIFICATE-----")
    written = sorted(p.name for p in made.pkcs12_path.parent.iterdir())
    assert written == ["jane-q-auditor.cert.pem", "jane-q-auditor.p12"]


def test_keygen_certificate_is_a_self_signed_document_signing_certificate(made):
    (cert,) = load_certificates([made.certificate_path])
    usage = cert.extensions.get_extension_for_class(x509.KeyUsage)
    assert usage.critical and usage.value.digital_signature and usage.value.content_commitment
    assert not usage.value.key_cert_sign and not usage.value.key_encipherment
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca is False
    assert cert.not_valid_after_utc - cert.not_valid_before_utc > dt.timedelta(days=5 * 365)
    info = made.info
    assert (info.common_name, info.organisation) == ("Jane Q. Auditor", "Example Forensics Ltd")
    assert info.self_signed and not info.demo
    assert info.subject == "E=jane@example.org,O=Example Forensics Ltd,CN=Jane Q. Auditor"
    assert info.sha256_fingerprint == cert.fingerprint(hashes.SHA256()).hex()


def test_pkcs12_loads_with_its_passphrase(made):
    key = load_pkcs12(made.pkcs12_path, PASSPHRASE)
    assert key.info == made.info
    assert key.certificate_pem == made.certificate_path.read_bytes()


@pytest.mark.parametrize("passphrase", ["wrong", None])
def test_wrong_pkcs12_passphrase_is_one_line(made, passphrase):
    with pytest.raises(InputError, match="wrong passphrase or not a PKCS#12 file") as err:
        load_pkcs12(made.pkcs12_path, passphrase)
    assert "\n" not in str(err.value)


def test_unreadable_and_bogus_key_files_are_input_errors(tmp_path):
    with pytest.raises(InputError, match="cannot read PKCS#12: no such file"):
        load_pkcs12(tmp_path / "absent.p12", PASSPHRASE)
    bogus = write_atomic(tmp_path / "bogus.p12", b"not a pkcs12 file")
    with pytest.raises(InputError, match="not a PKCS#12 file"):
        load_pkcs12(bogus, PASSPHRASE)
    with pytest.raises(InputError, match="not a PEM or DER certificate"):
        load_certificates([bogus])


def test_keygen_refuses_to_overwrite_and_needs_a_passphrase(made):
    with pytest.raises(InputError, match="refusing to overwrite"):
        keygen("Jane Q. Auditor", "Other Org", made.pkcs12_path.parent, PASSPHRASE)
    with pytest.raises(InputError, match="non-empty passphrase"):
        keygen("Someone Else", "Org", made.pkcs12_path.parent, "")
    assert len(list(made.pkcs12_path.parent.iterdir())) == 2


def test_demo_key_is_labelled_in_its_subject():
    info = demo_key().info
    assert info.organisation == DEMO_LABEL == "DEMO KEY — not an auditor identity"
    assert info.demo and info.self_signed


def write_pem_pair(directory, key, cert, passphrase: str | None):
    if passphrase:
        encryption = serialization.BestAvailableEncryption(passphrase.encode())
    else:
        encryption = serialization.NoEncryption()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, encryption)
    key_path = write_atomic(directory / "key.pem", pem)
    return key_path, write_atomic(directory / "cert.pem", cert.public_bytes(serialization.Encoding.PEM))


def ec_cert(key, *, days: int = 30, signing: bool = True) -> x509.Certificate:
    """Self-signed EC certificate; ``signing=False`` gives it encryption-only key usage."""
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "PEM Auditor")])
    now = dt.datetime.now(dt.timezone.utc)
    usage = x509.KeyUsage(
        digital_signature=signing,
        content_commitment=signing,
        key_encipherment=not signing,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=False,
        crl_sign=False,
        encipher_only=False,
        decipher_only=False,
    )
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=60))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(usage, critical=True)
        .sign(key, hashes.SHA256())
    )


def test_pem_key_and_certificate(tmp_path):
    key = ec.generate_private_key(ec.SECP256R1())
    key_path, cert_path = write_pem_pair(tmp_path, key, ec_cert(key), "pem pass")
    assert load_pem(key_path, cert_path, "pem pass").info.common_name == "PEM Auditor"
    with pytest.raises(InputError, match="needs a passphrase"):
        load_pem(key_path, cert_path)
    with pytest.raises(InputError, match="wrong passphrase"):
        load_pem(key_path, cert_path, "wrong")


def test_pem_key_must_match_the_certificate(tmp_path):
    key, other = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    key_path, cert_path = write_pem_pair(tmp_path, key, ec_cert(other), None)
    with pytest.raises(InputError, match="does not belong to the certificate"):
        load_pem(key_path, cert_path)


@pytest.mark.parametrize(
    ("cert_args", "message"),
    [
        ({"days": -1}, "is valid only from"),
        ({"signing": False}, "allows neither digital signature nor non-repudiation"),
    ],
)
def test_certificates_that_would_make_invalid_signatures_are_refused(tmp_path, cert_args, message):
    key = ec.generate_private_key(ec.SECP256R1())
    key_path, cert_path = write_pem_pair(tmp_path, key, ec_cert(key, **cert_args), None)
    with pytest.raises(InputError, match=message):
        load_pem(key_path, cert_path)


def test_keygen_file_names_are_plain_ascii(tmp_path):
    made = keygen("  Jürgen Müller-Ødegård ", "Gutachten GmbH", tmp_path, PASSPHRASE)
    assert made.pkcs12_path.name == "jurgen-muller-degard.p12"
    assert made.info.common_name == "Jürgen Müller-Ødegård"
