"""Verify a signed audit report: signature, coverage, trust, attached manifest.

The judgement is pyHanko's: a signature passes only when its validation
status' ``bottom_line`` holds (intact, valid, trusted, time stamp if any, no
illegal modifications), and any exception while validating is a failure.
Two checks are added on top, because a report is a closed document: the
signature must cover the whole file (nothing appended after signing, not even
an update pyHanko would call harmless), the only unsigned bytes inside it (the
zero padding of /Contents after the DER signature) must be zero, and the
attached files are read from the revision the signature covers, so what the
caller compares is what the auditor signed.  Which ``--trust`` certificates
may vouch for the signer, and at which moment, is :mod:`audit.signature.trust`'s.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from io import BytesIO
from pathlib import Path
from typing import NamedTuple

from asn1crypto import parser as asn1_parser
from cryptography import x509
from pyhanko.pdf_utils.reader import PdfFileReader
from pyhanko.sign.validation import validate_pdf_signature
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko.sign.validation.settings import KeyUsageConstraints
from pyhanko.sign.validation.status import PdfSignatureStatus, SignatureCoverageLevel

from audit.errors import InputError
from audit.files import LIMITS, parse_json, read_file
from audit.signature.attachments import embedded_files
from audit.signature.keys import CertificateInfo
from audit.signature.trust import (
    SigningMoment,
    describe,
    signing_moment,
    trust_failures,
    trusted_line,
    validation_contexts,
)

KEY_USAGES = frozenset({"digital_signature", "non_repudiation"})
"""Either suffices: CA-issued signing certificates carry one or both."""
PADDING_GAP = "exactly the /Contents hex string, in one case"
FUTURE_TOLERANCE = dt.timedelta(minutes=5)
"""Clock skew allowed between the signer's machine and the verifier's."""


class Check(NamedTuple):
    """One verification step: its name, whether it passed, one line for the user."""

    name: str
    ok: bool
    message: str


@dataclass(frozen=True)
class VerificationResult:
    """Everything :func:`verify_pdf` found; ``checks`` holds one line per check."""

    checks: tuple[Check, ...]
    intact: bool
    valid: bool
    trusted: bool
    covers_whole_file: bool
    signer: CertificateInfo | None
    trust_anchor: CertificateInfo | None
    """The --trust certificate that vouched for the signer (the signer's own when pinned)."""
    signing_time: datetime | None
    """As claimed by the signer (the signature dictionary's /M); not evidence by itself."""
    timestamp_time: datetime | None
    """As attested by a time-stamp authority (PAdES-B-T), when there is a token."""
    attachments: Mapping[str, bytes]
    """Embedded files by name, from the signed revision (the whole file when unsigned)."""

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


@dataclass(frozen=True)
class ReportVerification:
    """:func:`verify_report`'s answer: every check, and the signed manifest if it parsed."""

    checks: tuple[Check, ...]
    manifest: dict | None
    result: VerificationResult

    @property
    def ok(self) -> bool:
        return all(check.ok for check in self.checks)


def verify_pdf(source: str | Path | bytes, trust_certs: Sequence[x509.Certificate] | None = None) -> VerificationResult:
    """Validate the one signature of a report against ``trust_certs`` (no network is used).

    Without trust roots nothing can be trusted: a sound signature is then
    reported as "valid but untrusted", and the trust check fails.  A file that
    cannot be read is an :class:`InputError`; every problem found inside it is
    a failed check.
    """
    data = _read(source)
    trust = list(trust_certs or ())
    failed = VerificationResult(
        checks=(),
        intact=False,
        valid=False,
        trusted=False,
        covers_whole_file=False,
        signer=None,
        trust_anchor=None,
        signing_time=None,
        timestamp_time=None,
        attachments={},
    )
    try:
        reader = PdfFileReader(BytesIO(data))
    except Exception as exc:  # any parse failure means the file is not a verifiable report
        return replace(failed, checks=(Check("signature", False, f"not a readable PDF: {_one_line(exc)}"),))
    try:
        signatures = reader.embedded_signatures
        if len(signatures) == 1:
            sig = signatures[0]
            signer_cert = x509.load_der_x509_certificate(sig.signer_cert.dump())
            signer = CertificateInfo.of(signer_cert)
    except Exception as exc:  # a signature dictionary or CMS object that does not parse
        return replace(failed, checks=(Check("signature", False, f"the signature cannot be read: {_one_line(exc)}"),))
    if len(signatures) != 1:
        message = f"found {len(signatures)} signatures, a report carries one" if signatures else "the file is not signed"
        files, problem = _attachments(data)
        return replace(failed, checks=(Check("signature", False, message), *problem), attachments=files)
    signed_end = sig.byte_range[2] + sig.byte_range[3]
    signed_files, problem = _attachments(data[:signed_end])
    now = dt.datetime.now(dt.timezone.utc)
    try:
        when = signing_moment(sig, now)
        signer_context, ts_context = validation_contexts(trust, sig.signer_cert, when)
        status = validate_pdf_signature(
            sig,
            signer_validation_context=signer_context,
            ts_validation_context=ts_context,
            key_usage_settings=KeyUsageConstraints(key_usage=set(KEY_USAGES)),
        )
        embedded = [x509.load_der_x509_certificate(c.dump()) for c in sig.other_embedded_certs]
        padding = _padding_check(data, sig)
        trust_checks = _trust_checks(status, signer_cert, trust, embedded, when) if trust else (_untrusted(status),)
    except Exception as exc:  # pyHanko's judgement (or a certificate fact) failed to form: a failed signature
        message = f"signature of {describe(signer_cert)} could not be validated: {_one_line(exc)}"
        check = Check("signature", False, message)
        return replace(failed, checks=(check, *problem), signer=signer, attachments=signed_files)
    whole = status.coverage == SignatureCoverageLevel.ENTIRE_FILE
    trusted = all(check.ok for check in trust_checks)
    checks = (
        _signature_check(status, signer_cert),
        Check("coverage", True, "the signature covers the whole file")
        if whole
        else _coverage_failure(data, signed_end, signed_files),
        padding,
        _time_check(status, when, now),
        *trust_checks,
        *problem,
    )
    anchor = status.validation_path.trust_anchor.certificate if trusted else None
    return VerificationResult(
        checks=checks,
        intact=status.intact,
        valid=status.valid,
        trusted=trusted,
        covers_whole_file=whole,
        signer=signer,
        trust_anchor=CertificateInfo.of(x509.load_der_x509_certificate(anchor.dump())) if anchor else None,
        signing_time=status.signer_reported_dt,
        timestamp_time=status.timestamp_validity.timestamp if status.timestamp_validity else None,
        attachments=signed_files,
    )


def verify_report(
    source: str | Path | bytes,
    trust_certs: Sequence[x509.Certificate] | None = None,
    *,
    manifest_name: str,
) -> ReportVerification:
    """All checks ``audit verify`` runs on the document: :func:`verify_pdf`'s, then the manifest.

    The manifest check passes when ``manifest_name`` is attached in the signed
    revision and is a JSON object; the parsed object comes back for the
    caller's re-hash and recompute checks.
    """
    result = verify_pdf(source, trust_certs)
    raw = result.attachments.get(manifest_name)
    manifest = None
    if raw is None:
        attached = ", ".join(sorted(result.attachments)) or "none"
        check = Check("manifest", False, f"{manifest_name} is not attached (attached: {attached})")
    else:
        try:
            manifest = parse_json(raw, where=manifest_name, what="manifest")
        except InputError as exc:
            check = Check("manifest", False, str(exc))
        else:
            if isinstance(manifest, dict):
                where = " in the signed revision" if result.signer else ""
                check = Check("manifest", True, f"{manifest_name} attached{where} ({len(raw)} bytes of JSON)")
            else:
                manifest = None
                check = Check("manifest", False, f"{manifest_name} is JSON but not an object")
    return ReportVerification(result.checks + (check,), manifest, result)


def _signature_check(status: PdfSignatureStatus, signer: x509.Certificate) -> Check:
    if not status.intact:
        return Check("signature", False, "the signed bytes were changed after signing (digest mismatch)")
    if not status.valid:
        return Check("signature", False, f"the signature value does not verify with the certificate {describe(signer)}")
    return Check(
        "signature",
        True,
        f"intact and cryptographically valid ({status.pkcs7_signature_mechanism}, {status.md_algorithm}), "
        f"signed by {describe(signer)}",
    )


def _padding_check(data: bytes, sig: EmbeddedPdfSignature) -> Check:
    """The gap between the signed byte ranges is the /Contents hex string, and its padding is zero.

    The gap is the only part of the file the signature cannot cover; pyHanko
    reads the DER signature from its start and ignores what follows it, so
    bytes there could carry anything unnoticed.
    """
    contents = sig.pkcs7_content
    gap = data[sig.byte_range[1] : sig.byte_range[2]]
    hex_forms = {b"<" + contents.hex().encode() + b">", b"<" + contents.hex().upper().encode() + b">"}
    if gap not in hex_forms:
        return Check("padding", False, f"the unsigned gap between the signed byte ranges is not {PADDING_GAP}")
    _, _, _, header, body, trailer = asn1_parser.parse(contents)
    der_length = len(header) + len(body) + len(trailer)
    padding = contents[der_length:]
    nonzero = len(padding) - padding.count(0)
    if nonzero:
        return Check(
            "padding",
            False,
            f"padding not zero: {nonzero} of the {len(padding)} unsigned bytes after the {der_length}-byte DER "
            "signature in /Contents are not zero",
        )
    message = f"the {len(padding)} unsigned bytes after the {der_length}-byte DER signature are all zero"
    return Check("padding", True, message)


def _time_check(status: PdfSignatureStatus, when: SigningMoment, now: datetime) -> Check:
    """The moment certificates are checked at: plausible, and the one pyHanko validated the token for."""
    ts = status.timestamp_validity
    if when.source == "time stamp" and (ts is None or ts.timestamp != when.moment):
        return Check("time", False, "the time-stamp token pyHanko validated is not the one that fixed the signing time")
    if when.moment > now + FUTURE_TOLERANCE:
        return Check("time", False, f"the signing time {when.moment:%Y-%m-%d %H:%M:%S} UTC is in the future")
    return Check("time", True, f"certificates checked at the signing time: {when.describe()}")


def _coverage_failure(data: bytes, signed_end: int, signed_files: Mapping[str, bytes]) -> Check:
    """Say how much follows the signed part and which attachments it changes."""
    appended = len(data) - signed_end
    latest, problem = _attachments(data)
    if problem:
        detail = f"; with them {problem[0].message}"
    else:
        changed = sorted(n for n in signed_files.keys() | latest.keys() if signed_files.get(n) != latest.get(n))
        detail = f"; they change the attached file(s) {', '.join(changed)}" if changed else ""
    return Check(
        "coverage",
        False,
        f"the signature does not cover the whole file: {appended} byte{' follows' if appended == 1 else 's follow'} "
        f"the signed part{detail}",
    )


def _untrusted(status: PdfSignatureStatus) -> Check:
    if not (status.intact and status.valid):
        return Check("trust", False, "not trusted: the signature itself is not valid")
    return Check("trust", False, "valid but untrusted: no trust root given (pass the auditor's certificate to --trust)")


def _trust_checks(
    status: PdfSignatureStatus,
    signer: x509.Certificate,
    trust: Sequence[x509.Certificate],
    embedded: Sequence[x509.Certificate],
    when: SigningMoment,
) -> tuple[Check, ...]:
    """One passing line naming signer and anchor, or one failing line per reason.

    pyHanko decides (its bottom line); the certificate facts only name the
    reasons, and any one of them fails the check even if pyHanko passed.
    """
    if not (status.intact and status.valid):
        return (_untrusted(status),)
    reasons = trust_failures(signer, trust, embedded, when.moment)
    if not (status.trusted or reasons):
        indication = status.trust_problem_indic.name if status.trust_problem_indic else "no validation path"
        reasons.append(f"pyHanko's path validation rejects {describe(signer)} ({indication})")
    ts = status.timestamp_validity
    if ts is not None and not (ts.intact and ts.valid and ts.trusted):
        reasons.append("the time-stamp token is invalid or its authority is not among the --trust certificates")
    if not (reasons or status.bottom_line):
        reasons.append("pyHanko's bottom line is negative: changes made after signing are not permitted")
    if reasons:
        return tuple(Check("trust", False, reason) for reason in reasons)
    return (Check("trust", True, trusted_line(signer, status.validation_path.trust_anchor.certificate)),)


def _attachments(data: bytes) -> tuple[dict[str, bytes], tuple[Check, ...]]:
    """Embedded files of the PDF ``data``, or none and a failed check saying why."""
    try:
        return embedded_files(PdfFileReader(BytesIO(data))), ()
    except Exception as exc:  # malformed attachments are a finding, not a crash
        return {}, (Check("attachments", False, f"the attached files cannot be read: {_one_line(exc)}"),)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or "no details"
    return f"{type(exc).__name__}: {text}"


def _read(source: str | Path | bytes) -> bytes:
    if isinstance(source, bytes):
        return source
    return read_file(source, limit=LIMITS["report"], what="report")
