"""Signing and verifying audit reports (PAdES, with pyHanko).

The report is signed in memory as an incremental update of the rendered
PDF/A-3b, so the rendered bytes (manifest attached) are exactly what the
signature covers; the other side verifies it with :func:`verify_report` and a
trust root, or independently with poppler's ``pdfsig``.  A ``--trust``
certificate vouches only as the signer's own (pinned, byte-identical) or as a
CA on its path; certificates are checked at the signing moment
(:mod:`audit.signature.trust`).

Typical use::

    key = load_pkcs12("auditor.p12", passphrase)        # or load_pem(...), demo_key()
    write_atomic("reports/case.pdf", sign_pdf(pdf_bytes, key))
    outcome = verify_report("reports/case.pdf", load_certificates(["auditor.cert.pem"]),
                            manifest_name="audit-manifest.json")
"""

import logging

from audit.signature.keys import (
    DEMO_LABEL,
    AuditorKey,
    CertificateInfo,
    KeygenResult,
    demo_key,
    is_self_signed,
    keygen,
    load_certificates,
    load_pem,
    load_pkcs12,
)
from audit.signature.sign import sign_pdf
from audit.signature.verify import Check, ReportVerification, VerificationResult, verify_pdf, verify_report

# pyHanko logs a traceback for every certificate it cannot trust; here those
# findings come back as one-line checks, so keep the tracebacks off stderr
# unless the application configures logging itself.
logging.getLogger("pyhanko").addHandler(logging.NullHandler())
logging.getLogger("pyhanko_certvalidator").addHandler(logging.NullHandler())

__all__ = [
    "DEMO_LABEL",
    "AuditorKey",
    "CertificateInfo",
    "Check",
    "KeygenResult",
    "ReportVerification",
    "VerificationResult",
    "demo_key",
    "is_self_signed",
    "keygen",
    "load_certificates",
    "load_pem",
    "load_pkcs12",
    "sign_pdf",
    "verify_pdf",
    "verify_report",
]
