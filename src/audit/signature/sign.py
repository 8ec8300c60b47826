"""PAdES signature of a finished report, in memory.

The signature is an incremental update: the PDF/A-3b bytes from WeasyPrint,
with the manifest attached, stay byte for byte at the start of the signed
file, so the signature covers exactly what was rendered, and the update adds
only the signature (its metadata stays WeasyPrint's, consistent for PDF/A).  Nothing touches the
disk here; the caller writes the result with :func:`audit.atomic.write_atomic`.
"""

from __future__ import annotations

from io import BytesIO

from pyhanko.pdf_utils.incremental_writer import IncrementalPdfFileWriter
from pyhanko.pdf_utils.misc import PdfReadError
from pyhanko.sign.fields import SigSeedSubFilter
from pyhanko.sign.signers import PdfSignatureMetadata, PdfSigner
from pyhanko.sign.timestamps import HTTPTimeStamper, TimestampRequestError

from audit.errors import InputError
from audit.signature.keys import AuditorKey

FIELD_NAME = "AuditorSignature"
TIMESTAMP_TIMEOUT_S = 30


def sign_pdf(
    pdf_bytes: bytes,
    key: AuditorKey,
    *,
    field_name: str = FIELD_NAME,
    reason: str | None = "Statistical audit of model provenance",
    location: str | None = None,
    timestamp_url: str | None = None,
) -> bytes:
    """Sign ``pdf_bytes`` (PAdES-B-B; PAdES-B-T when ``timestamp_url`` names a time-stamp authority).

    The signature is invisible (the report's cover already names the auditor)
    and SHA-256 based.  A time-stamp authority that cannot be reached or
    answers badly is an :class:`InputError`; nothing else needs the network.
    """
    metadata = PdfSignatureMetadata(
        field_name=field_name,
        reason=reason,
        location=location,
        md_algorithm="sha256",
        subfilter=SigSeedSubFilter.PADES,
    )
    if timestamp_url and not timestamp_url.startswith(("http://", "https://")):
        raise InputError(f"time-stamp authority URL must start with http:// or https://, not {timestamp_url!r}")
    timestamper = HTTPTimeStamper(timestamp_url, timeout=TIMESTAMP_TIMEOUT_S) if timestamp_url else None
    signer = PdfSigner(metadata, signer=key.signer, timestamper=timestamper)
    try:
        writer = IncrementalPdfFileWriter(BytesIO(pdf_bytes))
        # pyHanko rewrites the metadata on every write, making the Info
        # /Producer ("WeasyPrint ...; pyHanko ...") disagree with the XMP one
        # ("pyHanko ..."), which breaks PDF/A.  Its maintainer's advice for
        # leaving metadata alone is this (internal) hook; a test guards it.
        writer._update_meta = lambda: None
        return signer.sign_pdf(writer).getvalue()
    except TimestampRequestError as exc:
        cause = exc.__cause__ or exc
        raise InputError(f"time-stamp authority {timestamp_url} failed: {type(cause).__name__}: {cause}") from exc
    except PdfReadError as exc:
        raise InputError(f"cannot sign: the report is not a readable PDF ({exc})") from exc
