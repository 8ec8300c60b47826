"""Population bundles: one file that hands a population to another auditor, its integrity provable.

A bundle is a zip archive, stored uncompressed with fixed timestamps and a
fixed member order, so the same population always gives the same bytes:

    bundle.json               the statement: format and the population digest
    population.json           the manifest (canonical; no pairs cache)
    models/NAME/KIND.npz      every fingerprint, by member then kind
    bundle.json.p7s           optional: detached CMS signature over bundle.json

The digest covers the manifest and every fingerprint (see
:func:`audit.baselines.population.population_digest`), so signing the
statement signs the population.  The signature is made and checked by
pyHanko's CMS code with the auditor keys of the reports (``audit keygen``);
anyone can also check it with ``openssl cms -verify -binary -inform DER
-in bundle.json.p7s -content bundle.json -CAfile CERT.pem``.  The pairs
cache is not shipped: the importer recomputes it from the fingerprints.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import io
import json
import os
import re
import secrets
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from asn1crypto import cms
from cryptography import x509

from audit.atomic import write_atomic
from audit.baselines import store
from audit.baselines.population import (
    Member,
    Population,
    manifest_document,
    parse_fingerprint,
    parse_manifest,
    population_digest,
)
from audit.errors import InputError
from audit.files import check_name, open_regular, parse_json
from audit.signature.keys import AuditorKey, CertificateInfo

FORMAT = "audit-population-bundle"
FORMAT_VERSION = 1
STATEMENT = "bundle.json"
SIGNATURE = "bundle.json.p7s"
MAX_BYTES = 1 << 32  # 4 GiB uncompressed: far above any population of fingerprints, far below a zip bomb's
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)
_FINGERPRINT = re.compile(r"^models/([A-Za-z0-9][A-Za-z0-9._-]{0,127})/([a-z0-9][a-z0-9-]{0,63})\.npz$")
KEY_USAGES = frozenset({"digital_signature", "non_repudiation"})


@dataclass(frozen=True)
class BundleInfo:
    """What a bundle holds and, once checked, who signed it."""

    path: Path
    name: str
    digest: str
    members: int
    fingerprints: int
    signer: CertificateInfo | None
    trusted: str | None  # which --trust certificate vouches for the signer (pinned, or a CA), when one was given


def export_bundle(population: str | Path, out: str | Path, *, key: AuditorKey | None = None) -> BundleInfo:
    """Write the (checked) population at ``population`` to one bundle file, signed with ``key`` if given."""
    source = Population.open(population)
    statement = _statement(source.digest)
    files = {STATEMENT: statement,
             store.MANIFEST: (json.dumps(source.manifest(), indent=1, sort_keys=True) + "\n").encode()}
    for name in sorted(source.members):
        for kind in sorted(source.members[name].fingerprints):
            relative = f"{store.MODELS}/{name}/{kind}.npz"
            files[relative] = store.read_checked(source.root, relative, source.members[name].fingerprints[kind])
    if key is not None:
        files[SIGNATURE] = _sign(statement, key)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
            info.external_attr = 0o644 << 16
            archive.writestr(info, data)
    path = write_atomic(out, buffer.getvalue())
    count = sum(len(m.fingerprints) for m in source.members.values())
    return BundleInfo(path, source.name, source.digest, len(source.members), count,
                      None if key is None else key.info, None)


def import_bundle(bundle: str | Path, directory: str | Path, *,
                  trust: Sequence[x509.Certificate] | None = None) -> BundleInfo:
    """Check a bundle whole, then create the population folder ``directory`` from it in one rename.

    Refused (one line, nothing written) when the archive is malformed, a
    fingerprint differs from its recorded SHA-256 or holds NaN, the digest
    does not match, or the signature does not verify.  With ``trust`` the
    bundle must be signed by one of those certificates, or by a certificate
    that a CA among them issued (the rules of report verification).
    """
    target = check_name(directory)
    if target.exists() and (not target.is_dir() or any(target.iterdir())):
        raise InputError(f"{target}: already exists and is not empty; import into a new folder")
    files = _read_archive(Path(bundle))
    info, document, members = _check(Path(bundle), files, trust)
    prints = {name: {kind: files[f"{store.MODELS}/{name}/{kind}.npz"] for kind in member.fingerprints}
              for name, member in members.items()}
    staging = target.parent / f".{target.name}.import-{secrets.token_hex(6)}.tmp"
    try:
        with store.locked(staging, write=True):
            population = Population(staging, document, {}, tables={})
            population._commit(members, prints)
        if population.digest != info.digest:  # the committed folder names exactly what was checked
            raise InputError(f"{bundle}: the imported population's digest differs from the bundle's")
        os.rename(staging, target)
    except OSError as exc:
        raise InputError(f"cannot create {target}: {exc.strerror or exc}") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return info


def read_bundle(bundle: str | Path, *, trust: Sequence[x509.Certificate] | None = None) -> BundleInfo:
    """Check a bundle without importing it (what ``import`` checks, nothing written)."""
    return _check(Path(bundle), _read_archive(Path(bundle)), trust)[0]


def _statement(digest: str) -> bytes:
    return (json.dumps({"format": FORMAT, "format_version": FORMAT_VERSION, "digest": digest}, sort_keys=True) + "\n").encode()


def _read_archive(path: Path) -> dict[str, bytes]:
    """Every member of the archive, names checked and sizes bounded before reading."""
    try:
        with open_regular(path, what="bundle") as handle, zipfile.ZipFile(handle) as archive:
            entries = archive.infolist()
            names = [e.filename for e in entries]
            if len(set(names)) != len(names):
                raise InputError(f"{path}: a name occurs twice in the bundle")
            for name in names:
                if name not in (STATEMENT, SIGNATURE, store.MANIFEST) and not _FINGERPRINT.match(name):
                    raise InputError(f"{path}: unexpected file '{name[:80]}' in the bundle")
            if sum(e.file_size for e in entries) > MAX_BYTES:
                raise InputError(f"{path}: the bundle unpacks to more than {MAX_BYTES >> 30} GiB; refusing it")
            return {e.filename: archive.read(e) for e in entries}
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, EOFError, ValueError) as exc:
        raise InputError(f"{path}: not a population bundle ({str(exc)[:80]})") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot read: {exc.strerror or exc}") from None


def _check(path: Path, files: dict[str, bytes],
           trust: Sequence[x509.Certificate] | None) -> tuple[BundleInfo, dict, dict[str, Member]]:
    """Everything a bundle claims, checked: names, fingerprint digests, finiteness, population digest, signature."""
    for required in (STATEMENT, store.MANIFEST):
        if required not in files:
            raise InputError(f"{path}: not a population bundle (no {required})")
    statement = parse_json(files[STATEMENT], where=f"{path}:{STATEMENT}", what="bundle statement")
    if not isinstance(statement, dict) or statement.get("format") != FORMAT or statement.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{path}: not an {FORMAT} v{FORMAT_VERSION} file")
    document, members = parse_manifest(files[store.MANIFEST], f"{path}:{store.MANIFEST}")
    recorded = {(name, kind): digest for name, m in members.items() for kind, digest in m.fingerprints.items()}
    shipped = {tuple(match.groups()) for name in files if (match := _FINGERPRINT.match(name))}
    if shipped != set(recorded):
        extra, missing = sorted(shipped - set(recorded)), sorted(set(recorded) - shipped)
        what = f"missing {'/'.join(missing[0])}" if missing else f"unrecorded {'/'.join(extra[0])}"
        raise InputError(f"{path}: the fingerprints differ from those the manifest records ({what})")
    for (name, kind), digest in sorted(recorded.items()):
        relative = f"{store.MODELS}/{name}/{kind}.npz"
        if store.sha256(files[relative]) != digest:
            raise InputError(f"{path}: fingerprint {name}/{kind} differs from the SHA-256 the manifest records")
        parse_fingerprint(files[relative], f"{path}:{relative}")
    digest = population_digest(manifest_document(document, members), recorded)
    if statement.get("digest") != digest:
        raise InputError(f"{path}: the population digest does not match its contents (bundle says "
                         f"{str(statement.get('digest'))[:16]}..., contents give {digest[:16]}...)")
    signer, trusted = None, None
    if SIGNATURE in files:
        signer, trusted = _verify_signature(path, files[STATEMENT], files[SIGNATURE], trust)
    elif trust:
        raise InputError(f"{path}: the bundle is not signed, but --trust asks for a signature")
    return BundleInfo(path, document["name"], digest, len(members), len(recorded), signer, trusted), document, members


def _sign(statement: bytes, key: AuditorKey) -> bytes:
    content = asyncio.run(key.signer.async_sign_general_data(statement, "sha256", detached=True))
    return content.dump()


def _verify_signature(path: Path, statement: bytes, signature: bytes,
                      trust: Sequence[x509.Certificate] | None) -> tuple[CertificateInfo, str | None]:
    """The signer, and the line saying which ``--trust`` certificate vouches for it (None without ``trust``).

    Refused unless the signature is intact and valid, and, with ``trust``,
    trusted by the rules reports follow (:mod:`audit.signature.trust`: a pinned
    certificate, or a CA among the ``--trust`` certificates, checked at the
    signing time the signer claims).
    """
    from pyhanko.sign.general import extract_certificate_info
    from pyhanko.sign.validation import async_validate_detached_cms
    from pyhanko.sign.validation.settings import KeyUsageConstraints

    from audit.signature.trust import SigningMoment, trust_failures, trusted_line, validation_contexts

    now = dt.datetime.now(dt.timezone.utc)
    try:
        signed = cms.ContentInfo.load(signature)["content"]
        signer_asn1 = extract_certificate_info(signed).signer_cert
        signer = x509.load_der_x509_certificate(signer_asn1.dump())
        claimed = _claimed_time(signed)
        when = SigningMoment(claimed, "claimed") if claimed else SigningMoment(now, "verification")
        context, _ = validation_contexts(list(trust or ()), signer_asn1, when)
        status = asyncio.run(async_validate_detached_cms(
            statement, signed, signer_validation_context=context, key_usage_settings=KeyUsageConstraints(key_usage=set(KEY_USAGES))))
        embedded = [x509.load_der_x509_certificate(c.chosen.dump()) for c in signed["certificates"]
                    if c.name == "certificate"]
    except Exception as exc:  # pyHanko could not form a judgement: the signature does not verify
        raise InputError(f"{path}: the signature cannot be checked ({' '.join(str(exc).split())[:120]})") from None
    info = CertificateInfo.of(signer)
    if not (status.intact and status.valid):
        raise InputError(f"{path}: the signature of {info.subject} does not verify (the bundle was changed after signing)")
    if not trust:
        return info, None
    reasons = trust_failures(signer, trust, embedded, when.moment)
    if reasons or not status.trusted:
        raise InputError(f"{path}: not trusted: " + "; ".join(reasons or [f"pyHanko's path validation rejects {info.subject}"]))
    return info, trusted_line(signer, status.validation_path.trust_anchor.certificate)


def _claimed_time(signed: cms.SignedData) -> dt.datetime | None:
    """The signingTime the signer states in its signed attributes (a claim, not evidence)."""
    for attribute in signed["signer_infos"][0]["signed_attrs"]:
        if attribute["type"].native == "signing_time":
            return attribute["values"][0].native
    return None
