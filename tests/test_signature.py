"""Sign a WeasyPrint PDF/A-3b like the real report, then verify it with pyHanko and poppler.

Everything is local: keys are made here, the time-stamp authority is a tiny
HTTP server on 127.0.0.1, and poppler's pdfsig/pdfdetach are the independent
second opinion the design asks for.
"""

from __future__ import annotations

import datetime as dt
import json
import shutil
import subprocess
from io import BytesIO
from pathlib import Path

import pytest
import weasyprint
from cryptography.hazmat.primitives import serialization
from pyhanko.pdf_utils import generic
from pyhanko.pdf_utils.embed import EmbeddedFileObject, FileSpec, embed_file
from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.reader import PdfFileReader

from cert_support import make_cert, tsa_server

from audit.atomic import write_atomic
from audit.errors import InputError
from audit.signature import (
    demo_key,
    is_self_signed,
    keygen,
    load_certificates,
    load_pem,
    load_pkcs12,
    sign_pdf,
    verify_pdf,
    verify_report,
)

MANIFEST_NAME = "audit-manifest.json"
MANIFEST = {"case_id": "TEST-1", "statistic": 0.927, "inputs": [{"sha256": "ab" * 32}]}
PASSPHRASE = "correct horse battery staple"

needs_poppler = pytest.mark.skipif(shutil.which("pdfsig") is None, reason="poppler-utils not installed")


def render_pdf(manifest: bytes | None = json.dumps(MANIFEST).encode()) -> bytes:
    """A small PDF/A-3b made the way the report is made: WeasyPrint, JSON attached as Data."""
    attachments = [] if manifest is None else [
        weasyprint.Attachment(string=manifest.decode(), name=MANIFEST_NAME, relationship="Data")
    ]
    html = "<h1>Provenance audit TEST-1</h1><p>Verdict: H0 not rejected at alpha = 0.01.</p>"
    return weasyprint.HTML(string=html).write_pdf(pdf_variant="pdf/a-3b", attachments=attachments)


@pytest.fixture(scope="module")
def auditor(tmp_path_factory):
    return keygen("Jane Q. Auditor", "Example Forensics Ltd", tmp_path_factory.mktemp("keys"), PASSPHRASE)


@pytest.fixture(scope="module")
def trust(auditor):
    return load_certificates([auditor.certificate_path])


@pytest.fixture(scope="module")
def report_pdf() -> bytes:
    return render_pdf()


@pytest.fixture(scope="module")
def signed(auditor, report_pdf) -> bytes:
    return sign_pdf(report_pdf, load_pkcs12(auditor.pkcs12_path, PASSPHRASE), location="Zurich")


@pytest.fixture
def signed_file(tmp_path, signed) -> Path:
    return write_atomic(tmp_path / "report.pdf", signed)


def failed(outcome) -> dict[str, str]:
    return {check.name: check.message for check in outcome.checks if not check.ok}


def poppler(tool: str, *args) -> str:
    return subprocess.run([tool, *map(str, args)], capture_output=True, text=True, check=True, timeout=60).stdout


# --- signing -------------------------------------------------------------------------------


def test_signature_is_an_incremental_update_of_the_rendered_pdf(report_pdf, signed):
    assert signed.startswith(report_pdf)
    assert len(signed) > len(report_pdf)


def test_signed_report_verifies_against_the_auditor_certificate(signed_file, trust):
    outcome = verify_report(signed_file, trust, manifest_name=MANIFEST_NAME)
    assert [c.name for c in outcome.checks] == ["signature", "coverage", "padding", "time", "trust", "manifest"]
    assert outcome.ok, failed(outcome)
    assert outcome.manifest == MANIFEST
    result = outcome.result
    assert result.intact and result.valid and result.trusted and result.covers_whole_file
    assert result.signer.common_name == "Jane Q. Auditor"
    assert result.signer.organisation == "Example Forensics Ltd"
    assert result.signer.self_signed and not result.signer.demo
    assert abs(result.signing_time - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=10)
    assert result.timestamp_time is None
    assert json.loads(result.attachments[MANIFEST_NAME]) == MANIFEST


def test_without_trust_root_the_signature_is_valid_but_untrusted(signed):
    outcome = verify_report(signed, None, manifest_name=MANIFEST_NAME)
    assert list(failed(outcome)) == ["trust"]
    assert "valid but untrusted" in failed(outcome)["trust"]
    assert outcome.result.valid and outcome.result.intact and not outcome.result.trusted


def test_a_different_trust_root_does_not_trust_the_auditor(signed):
    stranger = demo_key().certificate
    result = verify_pdf(signed, [stranger])
    assert result.intact and result.valid and not result.trusted
    assert failed(result)["trust"].startswith("no path to a trust anchor")


def test_demo_key_signs_and_its_certificate_says_demo(report_pdf):
    key = demo_key()
    result = verify_pdf(sign_pdf(report_pdf, key), [key.certificate])
    assert result.ok, failed(result)
    assert result.signer.demo and result.signer.self_signed
    assert "DEMO KEY" in result.signer.subject


def test_certificate_from_a_ca_is_trusted_through_the_ca_root(tmp_path, report_pdf):
    """load_pem with a chain file: the chain travels in the signature, only the root is --trust."""
    root_key, root = make_cert("Test Root CA", ca=True)
    leaf_key, leaf = make_cert("Jane Q. Auditor", (root_key, root))
    key_path = write_atomic(
        tmp_path / "leaf.key",
        leaf_key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.BestAvailableEncryption(PASSPHRASE.encode()),
        ),
    )
    chain = b"".join(c.public_bytes(serialization.Encoding.PEM) for c in (leaf, root))
    cert_path = write_atomic(tmp_path / "leaf.pem", chain)
    key = load_pem(key_path, cert_path, PASSPHRASE)
    assert not is_self_signed(leaf) and is_self_signed(root)
    assert not key.info.self_signed

    signed = sign_pdf(report_pdf, key)
    assert verify_pdf(signed, [root]).ok
    assert not verify_pdf(signed, [make_cert("Other Root", ca=True)[1]]).trusted


def test_wrong_pkcs12_passphrase_is_one_line_and_leaves_no_file(tmp_path, auditor, report_pdf):
    out = tmp_path / "report.pdf"
    with pytest.raises(InputError, match="wrong passphrase") as err:
        write_atomic(out, sign_pdf(report_pdf, load_pkcs12(auditor.pkcs12_path, "not the passphrase")))
    assert "\n" not in str(err.value)
    assert list(tmp_path.iterdir()) == []


def test_signing_something_that_is_not_a_pdf_is_an_input_error(auditor):
    with pytest.raises(InputError, match="not a readable PDF"):
        sign_pdf(b"hello, not a pdf", load_pkcs12(auditor.pkcs12_path, PASSPHRASE))


# --- tampering -----------------------------------------------------------------------------


def byte_range(signed: bytes) -> list[int]:
    start = signed.rindex(b"/ByteRange")
    return [int(v) for v in signed[start:].split(b"[", 1)[1].split(b"]", 1)[0].split()]


def comment_byte(signed: bytes) -> int:
    """A byte of the binary comment on the PDF's second line: changing it keeps the file readable."""
    return signed.index(b"\n%") + 3


def flip(data: bytes, position: int) -> bytes:
    return data[:position] + bytes([data[position] ^ 0x01]) + data[position + 1 :]


@pytest.mark.parametrize("where", ["header comment", "first object", "end of first range", "second range"])
def test_flipping_one_signed_byte_fails(signed, trust, where):
    _, len1, start2, len2 = byte_range(signed)
    position = {
        "header comment": comment_byte(signed),
        "first object": 20,
        "end of first range": len1 - 5,
        "second range": start2 + len2 // 2,
    }[where]
    outcome = verify_report(flip(signed, position), trust, manifest_name=MANIFEST_NAME)
    assert not outcome.ok
    assert "signature" in failed(outcome)


def test_flipped_byte_in_a_readable_file_is_a_digest_mismatch(signed, trust):
    result = verify_pdf(flip(signed, comment_byte(signed)), trust)
    assert not result.intact
    assert "digest mismatch" in failed(result)["signature"]


def test_changed_signature_value_does_not_verify(signed, trust):
    _, len1, start2, _ = byte_range(signed)
    hex_digits = signed[len1 + 1 : start2 - 1]
    last = len1 + len(hex_digits.rstrip(b"0"))  # the reserved space is zero-padded after the CMS object
    tampered = signed[:last] + (b"1" if signed[last : last + 1] == b"0" else b"0") + signed[last + 1 :]
    result = verify_pdf(tampered, trust)
    assert result.intact and not result.valid
    assert "does not verify" in failed(result)["signature"]


def test_unparseable_signature_container_fails_with_one_line(signed, trust):
    _, len1, _, _ = byte_range(signed)
    assert signed[len1 : len1 + 2] == b"<3"  # DER SEQUENCE tag 0x30 ...
    result = verify_pdf(signed[: len1 + 1] + b"4" + signed[len1 + 2 :], trust)  # ... becomes an application tag
    assert "the signature cannot be read" in failed(result)["signature"]


def test_appended_revision_fails_coverage(signed, trust):
    writer = IncrementalPdfFileWriter(BytesIO(signed))
    writer.add_object(generic.DictionaryObject({generic.NameObject("/Note"): generic.TextStringObject("added later")}))
    out = BytesIO()
    writer.write(out)
    result = verify_pdf(out.getvalue(), trust)
    assert result.intact and result.valid, "the signed part itself is untouched"
    assert not result.covers_whole_file and not result.ok
    assert "does not cover the whole file" in failed(result)["coverage"]


def test_swapped_manifest_fails_and_the_signed_manifest_is_what_comes_back(signed, trust):
    writer = IncrementalPdfFileWriter(BytesIO(signed))
    forged = json.dumps({**MANIFEST, "statistic": 0.1}).encode()
    data = EmbeddedFileObject.from_file_data(writer, data=forged, mime_type="application/json")
    embed_file(writer, FileSpec(file_spec_string=MANIFEST_NAME, embedded_data=data))
    out = BytesIO()
    writer.write(out)
    outcome = verify_report(out.getvalue(), trust, manifest_name=MANIFEST_NAME)
    assert not outcome.ok
    assert MANIFEST_NAME in failed(outcome)["coverage"]
    assert outcome.manifest == MANIFEST


def test_trailing_bytes_fail_coverage(signed, trust):
    result = verify_pdf(signed + b"\n", trust)
    assert failed(result) == {"coverage": "the signature does not cover the whole file: 1 byte follows the signed part"}


def test_second_signature_is_refused(signed, trust):
    twice = sign_pdf(signed, demo_key(), field_name="Countersignature")
    assert "found 2 signatures" in failed(verify_pdf(twice, trust))["signature"]


def test_unsigned_and_unreadable_files_fail_with_one_line(report_pdf, trust):
    unsigned = verify_pdf(report_pdf, trust)
    assert failed(unsigned) == {"signature": "the file is not signed"}
    assert MANIFEST_NAME in unsigned.attachments
    garbage = verify_pdf(b"%PDF-1.7\nnot really", trust)
    assert "not a readable PDF" in failed(garbage)["signature"]
    assert all("\n" not in c.message for c in garbage.checks)


def test_missing_or_broken_manifest_fails_the_manifest_check(auditor, trust):
    key = load_pkcs12(auditor.pkcs12_path, PASSPHRASE)
    missing = verify_report(sign_pdf(render_pdf(None), key), trust, manifest_name=MANIFEST_NAME)
    assert "is not attached" in failed(missing)["manifest"]
    broken = verify_report(sign_pdf(render_pdf(b"{not json"), key), trust, manifest_name=MANIFEST_NAME)
    assert list(failed(broken)) == ["manifest"] and broken.manifest is None


def test_unreadable_report_is_an_input_error(tmp_path):
    with pytest.raises(InputError, match="cannot read"):
        verify_pdf(tmp_path / "absent.pdf")


# --- poppler, the independent check -------------------------------------------------------


@needs_poppler
def test_pdfsig_reports_the_signature_valid(signed_file):
    out = poppler("pdfsig", signed_file)
    assert "Signature Validation: Signature is Valid." in out
    assert "Total document signed" in out
    assert "Signer Certificate Common Name: Jane Q. Auditor" in out
    assert "Signature Type: ETSI.CAdES.detached" in out


@needs_poppler
def test_pdfsig_reports_a_flipped_byte(tmp_path, signed):
    out = poppler("pdfsig", write_atomic(tmp_path / "t.pdf", flip(signed, comment_byte(signed))))
    assert "Signature is Valid." not in out
    assert "Digest Mismatch" in out


@needs_poppler
def test_poppler_lists_the_manifest_and_sees_pdfa_3b(signed_file):
    assert f"1: {MANIFEST_NAME}" in poppler("pdfdetach", "-list", signed_file)
    metadata = poppler("pdfinfo", "-meta", signed_file)
    assert 'pdfaid:part="3"' in metadata and 'pdfaid:conformance="B"' in metadata


def test_signing_leaves_the_pdfa_metadata_alone(report_pdf, signed):
    """PDF/A needs the Info dictionary and the XMP packet to agree; pyHanko would rewrite one of them."""
    before, after = (PdfFileReader(BytesIO(pdf)) for pdf in (report_pdf, signed))
    assert after.root["/Metadata"].data == before.root["/Metadata"].data
    producer = after.trailer["/Info"]["/Producer"]
    assert producer.startswith("WeasyPrint") and f'pdf:Producer="{producer}"'.encode() in after.root["/Metadata"].data


# --- time stamps (PAdES-B-T) without the network -----------------------------------------


@pytest.fixture(scope="module")
def tsa():
    with tsa_server() as (url, cert):
        yield url, cert


def test_time_stamped_signature_needs_the_tsa_root_too(auditor, trust, report_pdf, tsa):
    url, tsa_root = tsa
    signed = sign_pdf(report_pdf, load_pkcs12(auditor.pkcs12_path, PASSPHRASE), timestamp_url=url)
    result = verify_pdf(signed, [*trust, tsa_root])
    assert result.ok, failed(result)
    assert abs(result.timestamp_time - dt.datetime.now(dt.timezone.utc)) < dt.timedelta(minutes=10)
    assert "time-stamp" in failed(verify_pdf(signed, trust))["trust"]


@pytest.mark.parametrize(
    ("url", "message"), [("http://127.0.0.1:9/", "http://127.0.0.1:9/ failed: "), ("ftp://tsa", "must start with http")]
)
def test_unusable_tsa_is_an_input_error(auditor, report_pdf, url, message):
    with pytest.raises(InputError, match=message):
        sign_pdf(report_pdf, load_pkcs12(auditor.pkcs12_path, PASSPHRASE), timestamp_url=url)
