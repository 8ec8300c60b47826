"""Which ``--trust`` certificates may vouch for a signature, at which moment, and why one fails.

pyHanko's path validation (RFC 5280) treats a trust root as a bare name and
key: it checks neither the root's validity period nor whether it is a CA, and
it skips the key-usage policy when the signer's certificate is itself a root.
Given as-is, a ``--trust`` certificate would therefore vouch for an expired or
encryption-only signer, or for a leaf that a non-CA certificate issued.  So
the roots handed to pyHanko are qualified here:

* a ``--trust`` certificate byte-identical to the signer's (or to a time-stamp
  authority's, for its token) is *pinned*: it anchors only that signature, and
  pyHanko checks its validity period and key usage like any end entity's;
* any other ``--trust`` certificate anchors a path only if it is a CA
  (basicConstraints CA:TRUE, keyCertSign when key usage is present), and its
  own validity period is checked too.

Everything is checked at one moment: the time-stamp token's time when the
signature carries one, else the signing time the signer claims (a claim, said
so in the output), else the verification time.  pyHanko gives the verdict;
:func:`trust_failures` only explains it, one line per reason, because pyHanko
stops at its first finding and reports it as an AdES code.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from asn1crypto import x509 as asn1_x509
from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from pyhanko.sign.general import extract_certificate_info, find_cms_attribute_iter
from pyhanko.sign.validation.pdf_embedded import EmbeddedPdfSignature
from pyhanko_certvalidator import ValidationContext
from pyhanko_certvalidator.authority import CertTrustAnchor, TrustedServiceType, TrustQualifiers

from audit.signature.keys import display_name

SERVICE_PINNED = TrustedServiceType.UNSUPPORTED
"""Adds no implicit key usages, so the pinned certificate's own key usage is what pyHanko checks."""
KEY_USAGE_NAMES = {
    "digital_signature": "digitalSignature",
    "content_commitment": "nonRepudiation",
    "key_encipherment": "keyEncipherment",
    "data_encipherment": "dataEncipherment",
    "key_agreement": "keyAgreement",
    "key_cert_sign": "keyCertSign",
    "crl_sign": "cRLSign",
}


@dataclass(frozen=True)
class SigningMoment:
    """The moment at which every certificate is checked, and where it comes from."""

    moment: dt.datetime
    source: str
    """"time stamp", "claimed" (the signer's own /M or signingTime) or "verification"."""
    tsa_certs: tuple[asn1_x509.Certificate, ...] = ()
    """Certificates that signed the time-stamp tokens, pinned when given with --trust."""

    def describe(self) -> str:
        when = f"{self.moment:%Y-%m-%d %H:%M:%S} UTC"
        return {
            "time stamp": f"{when}, attested by the time-stamp token",
            "claimed": f"{when}, as claimed by the signer (no time stamp, so not independent evidence)",
            "verification": f"{when}, the verification time (the signature states no signing time)",
        }[self.source]


def signing_moment(sig: EmbeddedPdfSignature, now: dt.datetime) -> SigningMoment:
    """The time-stamp token's time, else the signer's claimed time, else ``now``.

    The token is read here, unverified, only to fix the moment; pyHanko then
    validates that same token, and the caller checks that the time it
    validated is this one.
    """
    tokens = list(find_cms_attribute_iter(sig.signer_info["unsigned_attrs"], "signature_time_stamp_token"))
    if tokens:
        signed = [token["content"] for token in tokens]
        gen_time = signed[0]["encap_content_info"]["content"].parsed["gen_time"].native
        tsa = tuple(extract_certificate_info(sd).signer_cert for sd in signed)
        return SigningMoment(_utc(gen_time), "time stamp", tsa)
    claimed = sig.self_reported_timestamp
    if claimed is not None:
        return SigningMoment(_utc(claimed), "claimed")
    return SigningMoment(now, "verification")


def validation_contexts(
    trust: Sequence[x509.Certificate], signer: asn1_x509.Certificate, when: SigningMoment
) -> tuple[ValidationContext, ValidationContext]:
    """Contexts for the signer and for the time-stamp tokens, each pinning only its own end entity."""

    def context(end_entities: Sequence[asn1_x509.Certificate]) -> ValidationContext:
        pinned_der = {c.dump() for c in end_entities}
        anchors = []
        for cert in map(_asn1, trust):
            pinned = cert.dump() in pinned_der
            if pinned or is_ca(_pyca(cert)):
                quals = TrustQualifiers(
                    valid_from=cert.not_valid_before,
                    valid_until=cert.not_valid_after,
                    max_path_length=None if pinned else cert.max_path_length,
                    # pyHanko checks a pinned end entity's key usage only if its service type is specified
                    trusted_service_type=SERVICE_PINNED if pinned else TrustedServiceType.CERTIFICATE_AUTHORITY,
                )
                anchors.append(CertTrustAnchor(cert, quals))
        return ValidationContext(trust_roots=anchors, allow_fetching=False, moment=when.moment)

    return context([signer]), context(when.tsa_certs)


def trusted_line(signer: x509.Certificate, anchor: asn1_x509.Certificate) -> str:
    """Who signed, and which ``--trust`` certificate vouched for it, both with fingerprints."""
    anchor_cert = _pyca(anchor)
    if _der(anchor_cert) == _der(signer):
        return f"{describe(signer)} is pinned: byte-identical to a --trust certificate"
    return f"{describe(signer)} chains to the trust anchor {describe(anchor_cert)}, a CA given with --trust"


def trust_failures(
    signer: x509.Certificate,
    trust: Sequence[x509.Certificate],
    embedded: Sequence[x509.Certificate],
    moment: dt.datetime,
) -> list[str]:
    """One line per reason the signer's certificate cannot be trusted at ``moment`` (empty: none found)."""
    reasons = _validity(signer, moment, "the signer's certificate")
    usage = _key_usage(signer)
    if usage is not None and not (usage.digital_signature or usage.content_commitment):
        reasons.append(f"key usage lacks digitalSignature/nonRepudiation: {describe(signer)} allows {_usages(usage)}")
    elif usage is None:
        reasons.append(f"key usage lacks digitalSignature/nonRepudiation: {describe(signer)} has no keyUsage extension")
    trusted = {_der(c) for c in trust}
    if _der(signer) in trusted:
        return reasons
    # not pinned: walk up from the signer through the certificates at hand, say where the path breaks
    for child, issuer in _issuers(signer, [*trust, *embedded]):
        if issuer is None:
            return [*reasons, _no_path(child, signer, trust)]
        given = " (given with --trust)" if _der(issuer) in trusted else ""
        if not is_ca(issuer):
            return [*reasons, f"issuer is not a CA: {describe(issuer)}{given}, which issued "
                    f"{display_name(child.subject)}, has no basicConstraints CA:TRUE with keyCertSign"]
        problems = _validity(issuer, moment, f"issuer {display_name(issuer.subject)}")
        if problems or given:
            return reasons + problems
    return [*reasons, _no_path(signer, signer, trust)]


def is_ca(cert: x509.Certificate) -> bool:
    """basicConstraints CA:TRUE, and keyCertSign when the certificate states its key usage."""
    try:
        ca = cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    except x509.ExtensionNotFound:
        return False
    usage = _key_usage(cert)
    return ca and (usage is None or usage.key_cert_sign)


def describe(cert: x509.Certificate) -> str:
    return f"{display_name(cert.subject)} (SHA-256 {cert.fingerprint(hashes.SHA256()).hex()})"


def _issuers(
    cert: x509.Certificate, pool: Sequence[x509.Certificate]
) -> Iterator[tuple[x509.Certificate, x509.Certificate | None]]:
    """(certificate, its issuer among ``pool`` or None) up the chain, each certificate used once."""
    seen = {_der(cert)}
    for _ in range(len(pool)):
        issuer = next((c for c in pool if _der(c) not in seen and _issued(c, cert)), None)
        yield cert, issuer
        if issuer is None:
            return
        seen.add(_der(issuer))
        cert = issuer


def _no_path(top: x509.Certificate, signer: x509.Certificate, trust: Sequence[x509.Certificate]) -> str:
    line = f"no path to a trust anchor: no --trust certificate is {describe(signer)} or a CA that issued its chain"
    if top is not signer:
        line += f" (the chain ends at {display_name(top.subject)})"
    namesakes = [c for c in trust if c.subject == signer.subject and _der(c) != _der(signer)]
    if namesakes:
        line += f"; the --trust certificate {describe(namesakes[0])} has the signer's name but is another certificate"
    return line


def _validity(cert: x509.Certificate, moment: dt.datetime, whose: str) -> list[str]:
    when = f"{moment:%Y-%m-%d %H:%M:%S} UTC"
    if moment > cert.not_valid_after_utc:
        return [f"expired at signing time: {whose} expired {cert.not_valid_after_utc:%Y-%m-%d %H:%M:%S} UTC, "
                f"before {when}"]
    if moment < cert.not_valid_before_utc:
        return [f"not yet valid at signing time: {whose} is valid from "
                f"{cert.not_valid_before_utc:%Y-%m-%d %H:%M:%S} UTC, after {when}"]
    return []


def _key_usage(cert: x509.Certificate) -> x509.KeyUsage | None:
    try:
        return cert.extensions.get_extension_for_class(x509.KeyUsage).value
    except x509.ExtensionNotFound:
        return None


def _usages(usage: x509.KeyUsage) -> str:
    """The key usage bits set, by their RFC 5280 names."""
    return ", ".join(rfc for attr, rfc in KEY_USAGE_NAMES.items() if getattr(usage, attr)) or "nothing"


def _issued(issuer: x509.Certificate, cert: x509.Certificate) -> bool:
    try:
        cert.verify_directly_issued_by(issuer)
    except (InvalidSignature, UnsupportedAlgorithm, ValueError, TypeError):
        return False
    return True


def _utc(moment: dt.datetime) -> dt.datetime:
    return moment.astimezone(dt.timezone.utc) if moment.tzinfo else moment.replace(tzinfo=dt.timezone.utc)


def _der(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.DER)


def _asn1(cert: x509.Certificate) -> asn1_x509.Certificate:
    return asn1_x509.Certificate.load(_der(cert))


def _pyca(cert: asn1_x509.Certificate) -> x509.Certificate:
    return x509.load_der_x509_certificate(cert.dump())
