"""Which certificates ``audit verify`` trusts, checked at the signing time, with one line per reason.

Each failing case reproduces an attack from the red-team pass of issue 13: a
report signed with a certificate no verifier should accept, then verified with
``--trust`` of a certificate the attacker hopes the verifier holds.  Every
signature here is cryptographically sound; only trust can fail.  Bad
certificates sign through ``signing_key``, which skips the loaders' refusal
(an attacker does not use our loaders), and ``signing_clock`` backdates or
postdates the signing time pyHanko writes (/M), as any signer can.
"""

from __future__ import annotations

import datetime as dt

import pytest
from cert_support import NOW, make_cert, signing_clock, signing_key, tsa_server  # noqa: F401 (fixture)
from cryptography.hazmat.primitives import hashes, serialization
from test_signature import PASSPHRASE, failed, needs_poppler, poppler, render_pdf

from audit.atomic import write_atomic
from audit.signature import keygen, load_certificates, load_pkcs12, sign_pdf, verify_pdf
from audit.signature.verify import FUTURE_TOLERANCE, PADDING_GAP

DAY = dt.timedelta(days=1)


@pytest.fixture(scope="module")
def pdf() -> bytes:
    return render_pdf()


@pytest.fixture(scope="module")
def root():
    return make_cert("Test Root CA", ca=True)


def fingerprint(cert) -> str:
    return cert.fingerprint(hashes.SHA256()).hex()


def trust_lines(result) -> list[str]:
    return [c.message for c in result.checks if c.name == "trust"]


def assert_only_trust_fails(result, *reasons: str) -> None:
    """The signature is sound and the trust check fails with exactly these reasons (prefixes), in order."""
    assert result.intact and result.valid and not result.trusted
    assert set(failed(result)) == {"trust"}
    lines = trust_lines(result)
    assert len(lines) == len(reasons), lines
    for line, reason in zip(lines, reasons):
        assert line.startswith(reason), line


# --- pinned self-signed certificates (as `audit keygen` makes them) ----------------------------


def test_keygen_certificate_is_pinned_and_named_with_its_fingerprint(tmp_path, pdf):
    """The good case: the auditor's own certificate, given with --trust among others, vouches for itself."""
    made = keygen("Jane Q. Auditor", "Example Forensics Ltd", tmp_path, PASSPHRASE)
    signed = sign_pdf(pdf, load_pkcs12(made.pkcs12_path, PASSPHRASE))
    [cert] = load_certificates([made.certificate_path])
    others = [make_cert("Other Auditor")[1], make_cert("Some Root", ca=True)[1]]
    result = verify_pdf(signed, [others[0], cert, others[1]])
    assert result.ok, failed(result)
    fp = fingerprint(cert)
    assert result.signer.sha256_fingerprint == result.trust_anchor.sha256_fingerprint == fp
    assert fp == made.info.sha256_fingerprint
    subject = "O=Example Forensics Ltd,CN=Jane Q. Auditor"
    assert trust_lines(result) == [f"{subject} (SHA-256 {fp}) is pinned: byte-identical to a --trust certificate"]
    assert f"signed by {subject} (SHA-256 {fp})" in result.checks[0].message


@pytest.mark.parametrize(
    ("validity", "signed_at", "reason"),
    [
        # signed today with a certificate that expired yesterday
        ((-30 * DAY, -DAY), None, "expired at signing time: the signer's certificate expired"),
        # backdating /M does not help when it falls outside the validity too
        ((-30 * DAY, -20 * DAY), -10 * DAY, "expired at signing time: the signer's certificate expired"),
        # a certificate whose validity starts in three days
        ((3 * DAY, 30 * DAY), None, "not yet valid at signing time: the signer's certificate is valid from"),
    ],
    ids=["expired", "expired-backdated", "not-yet-valid"],
)
def test_pinned_certificate_outside_its_validity_at_signing_time_fails(pdf, signing_clock, validity, signed_at, reason):
    """Red team: an expired / not-yet-valid self-signed certificate verified with --trust of itself."""
    key, cert = make_cert("Jane Q. Auditor", not_before=NOW + validity[0], not_after=NOW + validity[1])
    if signed_at is not None:
        signing_clock(NOW + signed_at)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, cert)), [cert])
    assert_only_trust_fails(result, reason)


def test_validity_is_judged_at_the_signing_time_not_today(pdf, signing_clock):
    """A report signed while its certificate was valid stays verifiable after the certificate expires."""
    key, cert = make_cert("Jane Q. Auditor", not_before=NOW - 30 * DAY, not_after=NOW - 10 * DAY)
    signing_clock(NOW - 20 * DAY)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, cert)), [cert])
    assert result.ok, failed(result)
    [time] = [c.message for c in result.checks if c.name == "time"]
    assert time.startswith(f"certificates checked at the signing time: {NOW - 20 * DAY:%Y-%m-%d %H:%M:%S} UTC")
    assert "as claimed by the signer" in time


def test_signing_time_in_the_future_fails(pdf, signing_clock):
    """Red team's way around "not yet valid": postdate /M into the validity period."""
    key, cert = make_cert("Jane Q. Auditor", not_before=NOW + 3 * DAY)
    signing_clock(NOW + 4 * DAY)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, cert)), [cert])
    assert set(failed(result)) == {"time"}
    assert failed(result)["time"] == f"the signing time {NOW + 4 * DAY:%Y-%m-%d %H:%M:%S} UTC is in the future"
    assert FUTURE_TOLERANCE < DAY


def test_time_stamp_fixes_the_signing_time(pdf):
    """With a TSA token the certificate is checked at the token's time, whatever /M claims.

    The certificate expired ten days ago; /M says now, the token says twenty
    days ago: the token wins and the signature verifies.  Without the TSA's
    certificate among --trust, the token proves nothing and trust fails.
    """
    key, cert = make_cert("Jane Q. Auditor", not_before=NOW - 30 * DAY, not_after=NOW - 10 * DAY)
    with tsa_server(at=NOW - 20 * DAY) as (url, tsa_cert):
        signed = sign_pdf(pdf, signing_key(key, cert), timestamp_url=url)
    result = verify_pdf(signed, [cert, tsa_cert])
    assert result.ok, failed(result)
    assert result.timestamp_time == NOW - 20 * DAY
    when = f"{NOW - 20 * DAY:%Y-%m-%d %H:%M:%S} UTC"
    assert [c.message for c in result.checks if c.name == "time"] == [
        f"certificates checked at the signing time: {when}, attested by the time-stamp token"
    ]
    assert_only_trust_fails(
        verify_pdf(signed, [cert]),
        "the time-stamp token is invalid or its authority is not among the --trust certificates",
    )


@pytest.mark.parametrize(
    ("usage", "allows"),
    [({"key_encipherment"}, "allows keyEncipherment"), ({"key_cert_sign"}, "allows keyCertSign"),
     (set(), "has no keyUsage extension")],
    ids=["keyEncipherment-only", "keyCertSign-only", "no-key-usage"],
)
def test_pinned_certificate_without_signing_key_usage_fails(pdf, usage, allows):
    """Red team: an encryption-only or certificate-signing-only certificate verified with --trust of itself."""
    key, cert = make_cert("Jane Q. Auditor", usage=usage)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, cert)), [cert])
    assert_only_trust_fails(result, "key usage lacks digitalSignature/nonRepudiation")
    assert trust_lines(result)[0].endswith(f"(SHA-256 {fingerprint(cert)}) {allows}")


def test_every_reason_gets_its_line(pdf):
    """An expired encryption-only certificate fails for both reasons, one line each."""
    key, cert = make_cert("Jane Q. Auditor", usage={"key_encipherment"}, not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, cert)), [cert])
    assert_only_trust_fails(result, "expired at signing time", "key usage lacks digitalSignature/nonRepudiation")


def test_same_named_certificate_with_another_key_is_not_the_auditor(pdf):
    """Red team: re-sign the report with a fresh certificate that copies the auditor's name.

    With several --trust certificates the old trust line named the trusted
    certificate, so the forgery read as the auditor's.  Now it fails, and the
    line names the signer's fingerprint and the namesake it is not.
    """
    _, genuine = make_cert("Jane Q. Auditor", org="Example Forensics Ltd")
    key, forged = make_cert("Jane Q. Auditor", org="Example Forensics Ltd")
    _, other = make_cert("Other Auditor")
    result = verify_pdf(sign_pdf(pdf, signing_key(key, forged)), [other, genuine])
    assert_only_trust_fails(result, "no path to a trust anchor")
    line = trust_lines(result)[0]
    assert f"(SHA-256 {fingerprint(forged)})" in line
    assert line.endswith(f"(SHA-256 {fingerprint(genuine)}) has the signer's name but is another certificate")
    assert result.trust_anchor is None


# --- certificates issued by a CA ------------------------------------------------------------------


def test_leaf_under_a_trusted_ca_names_signer_and_anchor(pdf, root):
    """The good case: the CA is --trust, the leaf and its chain travel in the signature."""
    key, leaf = make_cert("Jane Q. Auditor", root)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, leaf, root[1])), [make_cert("Other Root", ca=True)[1], root[1]])
    assert result.ok, failed(result)
    assert result.trust_anchor.sha256_fingerprint == fingerprint(root[1])
    assert trust_lines(result) == [
        f"CN=Jane Q. Auditor (SHA-256 {fingerprint(leaf)}) chains to the trust anchor "
        f"CN=Test Root CA (SHA-256 {fingerprint(root[1])}), a CA given with --trust"
    ]


def test_leaf_issued_by_a_trusted_certificate_that_is_not_a_ca_fails(pdf):
    """Red team: the auditor's own (CA:FALSE) certificate, or its key, issues a leaf that then signs."""
    issuer = make_cert("Jane Q. Auditor")
    key, leaf = make_cert("Jane's Laptop", issuer)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, leaf, issuer[1])), [issuer[1]])
    assert_only_trust_fails(result, f"issuer is not a CA: CN=Jane Q. Auditor (SHA-256 {fingerprint(issuer[1])}) "
                                    "(given with --trust), which issued CN=Jane's Laptop")


def test_ca_without_key_cert_sign_is_not_a_ca(pdf):
    """basicConstraints CA:TRUE alone is not enough when the key usage forbids signing certificates."""
    issuer = make_cert("Odd CA", ca=True, usage={"digital_signature"})
    key, leaf = make_cert("Jane Q. Auditor", issuer)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, leaf, issuer[1])), [issuer[1]])
    assert_only_trust_fails(result, "issuer is not a CA: CN=Odd CA")


def test_non_ca_intermediate_under_a_trusted_root_fails(pdf, root):
    """The chain breaks in the middle: a CA's end-entity certificate issues the signer's."""
    middle = make_cert("Not A CA", root)
    key, leaf = make_cert("Jane Q. Auditor", middle)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, leaf, middle[1], root[1])), [root[1]])
    assert_only_trust_fails(result, "issuer is not a CA: CN=Not A CA")


@pytest.mark.parametrize(
    ("whose", "reason"),
    [("leaf", "expired at signing time: the signer's certificate"),
     ("root", "expired at signing time: issuer CN=Test Root CA")],
)
def test_expired_certificate_in_a_ca_chain_fails(pdf, whose, reason):
    """Expiry is checked for every certificate on the path, the trusted root included."""
    expired = {"not_before": NOW - 30 * DAY, "not_after": NOW - DAY}
    root = make_cert("Test Root CA", ca=True, **(expired if whose == "root" else {}))
    key, leaf = make_cert("Jane Q. Auditor", root, **(expired if whose == "leaf" else {}))
    result = verify_pdf(sign_pdf(pdf, signing_key(key, leaf, root[1])), [root[1]])
    assert_only_trust_fails(result, reason)


@pytest.mark.parametrize("usage", [{"key_encipherment"}, {"key_cert_sign"}])
def test_leaf_under_a_ca_without_signing_key_usage_fails(pdf, root, usage):
    key, leaf = make_cert("Jane Q. Auditor", root, usage=usage)
    result = verify_pdf(sign_pdf(pdf, signing_key(key, leaf, root[1])), [root[1]])
    assert_only_trust_fails(result, "key usage lacks digitalSignature/nonRepudiation")


def test_the_verdict_is_pyhankos_not_the_explanation(pdf, root, monkeypatch):
    """With the reason finder silenced, pyHanko's own path validation still rejects every bad case."""
    monkeypatch.setattr("audit.signature.verify.trust_failures", lambda *args: [])
    bad = [
        make_cert("expired", not_before=NOW - 30 * DAY, not_after=NOW - DAY),
        make_cert("not yet valid", not_before=NOW + 3 * DAY),
        make_cert("keyEncipherment", usage={"key_encipherment"}),
        make_cert("keyCertSign", usage={"key_cert_sign"}),
    ]
    cases = [(signing_key(key, cert), [cert]) for key, cert in bad]
    issuer = make_cert("not a CA")
    key, leaf = make_cert("leaf", issuer)
    cases.append((signing_key(key, leaf, issuer[1]), [issuer[1]]))
    for signer, trust in cases:
        result = verify_pdf(sign_pdf(pdf, signer), trust)
        assert_only_trust_fails(result, "pyHanko's path validation rejects")


# --- the unsigned bytes inside the signature --------------------------------------------------------


def padded(signed: bytes, replacement: bytes) -> bytes:
    """``signed`` with the last hex digits of /Contents (zero padding) replaced."""
    end = signed.index(b">", signed.index(b"/Contents <"))
    return signed[: end - len(replacement)] + replacement + signed[end:]


@pytest.fixture(scope="module")
def pinned_signed(pdf):
    key, cert = make_cert("Jane Q. Auditor")
    return sign_pdf(pdf, signing_key(key, cert)), cert


def test_padding_is_zero_in_a_fresh_signature(pinned_signed):
    signed, cert = pinned_signed
    [line] = [c.message for c in verify_pdf(signed, [cert]).checks if c.name == "padding"]
    assert line.startswith("the ") and line.endswith("DER signature are all zero")


def test_data_hidden_in_the_padding_fails(pinned_signed):
    """Red team: the padding after the DER signature is unsigned, so it could carry anything."""
    signed, cert = pinned_signed
    result = verify_pdf(padded(signed, b"68696464656E"), [cert])  # "hidden", upper case as pyHanko writes hex
    assert result.intact and result.valid and result.trusted
    assert set(failed(result)) == {"padding"}
    assert failed(result)["padding"].startswith("padding not zero: 6 of the ")


def test_hex_case_in_the_gap_is_no_hidden_channel(pinned_signed):
    """Mixed upper/lower case hex digits would carry a bit each; the gap must be one case throughout."""
    signed, cert = pinned_signed
    start = signed.index(b"/Contents <") + len(b"/Contents <")
    i = next(i for i in range(start, start + 64) if chr(signed[i]) in "ABCDEF")
    mixed = signed[:i] + signed[i : i + 1].lower() + signed[i + 1 :]
    result = verify_pdf(mixed, [cert])
    assert set(failed(result)) == {"padding"}
    assert failed(result)["padding"] == f"the unsigned gap between the signed byte ranges is not {PADDING_GAP}"


# --- the command line and poppler ------------------------------------------------------------------


def test_verify_command_prints_one_fail_line_per_reason(tmp_path, pdf, run_cli):
    key, cert = make_cert("Jane Q. Auditor", usage={"key_encipherment"}, not_before=NOW - 30 * DAY, not_after=NOW - DAY)
    report = write_atomic(tmp_path / "report.pdf", sign_pdf(pdf, signing_key(key, cert)))
    pem = write_atomic(tmp_path / "cert.pem", cert.public_bytes(serialization.Encoding.PEM))
    code, out, err = run_cli("verify", report, "--trust", pem)
    assert code == 1 and err == ""
    fails = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert [line.split(":")[0] for line in fails] == ["FAIL trust", "FAIL trust"]
    assert fails[0].startswith("FAIL trust: expired at signing time")
    assert fails[1].startswith("FAIL trust: key usage lacks digitalSignature/nonRepudiation")
    assert f"signed by CN=Jane Q. Auditor (SHA-256 {fingerprint(cert)})" in out
    assert out.rstrip().endswith("NOT verified")


@needs_poppler
def test_pdfsig_reports_the_ca_issued_signature_valid(tmp_path, pdf, root):
    key, leaf = make_cert("Jane Q. Auditor", root)
    signed = sign_pdf(pdf, signing_key(key, leaf, root[1]))
    assert verify_pdf(signed, [root[1]]).ok
    out = poppler("pdfsig", write_atomic(tmp_path / "ca.pdf", signed))
    assert "Signature Validation: Signature is Valid." in out
    assert "Signer Certificate Common Name: Jane Q. Auditor" in out
