"""Reading, growing and querying a baseline population folder.

Every read checks what it reads against ``population.json`` (the SHA-256 of
each fingerprint and of the pairs cache), refuses non-finite numbers, and
holds the whole population in memory afterwards, so an audit runs on exactly
the population whose :attr:`Population.digest` it records.  Writers hold the
folder's lock and commit all-or-nothing (see :mod:`audit.baselines.store`).
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from audit.atomic import write_atomic
from audit.baselines import store
from audit.checkpoint import open_checkpoint
from audit.checkpoint.hub import default_member_name
from audit.checkpoint.hashing import listing_digest, tensor_content_digest
from audit.errors import InputError
from audit.files import LIMITS, check_name, parse_json, read_file, status
from audit.inspection import architecture, summarize
from audit.methods import REGISTRY, Fingerprint, Inapplicable, Method, Model, get_method
from audit.parallel import run_tasks
from audit.roles import assign_roles
from audit.stats import derive_seed

FORMAT = "audit-population"
FORMAT_VERSION = 2
DIGEST_PREFIX = b"audit-population-digest v1\n"
NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
KIND = re.compile(r"^[a-z0-9][a-z0-9-]{0,63}$")
SHA256 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True)
class Member:
    """One independently trained model of the population (metadata; no weights)."""

    name: str
    source: str
    licence: str
    notes: str
    content: str | None  # SHA-256 of its tensors (names, dtypes, shapes, bytes): its identity; None if never hashed
    files: Mapping[str, str]  # file name -> SHA-256, as fingerprinted (provenance, not identity)
    architecture: Mapping[str, Any]
    fingerprints: Mapping[str, str] = field(default_factory=dict)  # kind -> SHA-256 of the stored file
    inapplicable: Mapping[str, str] = field(default_factory=dict)  # kind -> why no fingerprint could be made

    @property
    def sha256(self) -> str:
        """SHA-256 of the member's file listing, as :class:`audit.compare.ModelInfo` has it."""
        return listing_digest(dict(self.files))

    def to_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(self).items()}

    @classmethod
    def from_dict(cls, data: object, where: str) -> Member:
        """A member record, its every field type-checked (a hand-edited manifest gets one line)."""
        fields = {f.name for f in dataclasses.fields(cls)}
        if not isinstance(data, dict) or set(data) != fields:
            raise InputError(f"{where}: a member must be an object with exactly the fields {', '.join(sorted(fields))}")
        name = data["name"]
        if not isinstance(name, str) or not NAME.match(name):
            raise InputError(f"{where}: member name {str(name)[:40]!r} is not a valid name")
        for key in ("source", "licence", "notes"):
            if not isinstance(data[key], str):
                raise InputError(f"{where}: member '{name}': {key} must be a string")
        if data["content"] is not None and not (isinstance(data["content"], str) and SHA256.match(data["content"])):
            raise InputError(f"{where}: member '{name}': content must be a hex SHA-256 or null")
        for key, pattern in (("files", None), ("fingerprints", SHA256), ("inapplicable", None)):
            value = data[key]
            if not isinstance(value, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in value.items()):
                raise InputError(f"{where}: member '{name}': {key} must map strings to strings")
            if key != "files" and not all(KIND.match(k) for k in value):
                raise InputError(f"{where}: member '{name}': {key} has a kind that is not a method's fingerprint kind")
            if pattern and not all(pattern.match(v) for v in value.values()):
                raise InputError(f"{where}: member '{name}': {key} must record hex SHA-256 digests")
        architecture = data["architecture"]
        if not isinstance(architecture, dict) or not all(
                type(architecture.get(k)) is int or (k == "hidden" and architecture.get(k) is None) for k in ("depth", "hidden")):
            raise InputError(f"{where}: member '{name}': architecture must hold a whole-number depth and hidden width")
        return cls(**data)


@dataclass(frozen=True)
class PairTable:
    """One method over every comparable member pair: the population's null and calibration."""

    method: str
    pairs: tuple[tuple[str, str], ...]
    statistics: np.ndarray
    log10_pvalues: np.ndarray | None  # the within-pair test of each pair (exact methods)
    skipped: Mapping[str, str]  # "a|b" -> why the pair is not comparable

    def to_dict(self) -> dict:
        return {
            "pairs": [list(p) for p in self.pairs],
            "statistics": [float(x) for x in self.statistics],
            "log10_pvalues": None if self.log10_pvalues is None else [float(x) for x in self.log10_pvalues],
            "skipped": dict(self.skipped),
        }

    @classmethod
    def from_dict(cls, method: str, data: Mapping[str, Any]) -> PairTable:
        try:
            log10 = data.get("log10_pvalues")
            table = cls(method, tuple((str(a), str(b)) for a, b in data["pairs"]), np.array(data["statistics"], dtype=float),
                        None if log10 is None else np.array(log10, dtype=float), dict(data.get("skipped", {})))
        except (KeyError, TypeError, ValueError) as exc:
            raise InputError(f"pairs.json: the {method} table is malformed ({exc})") from None
        sizes = {len(table.pairs), table.statistics.size} | ({table.log10_pvalues.size} if log10 is not None else set())
        if len(sizes) != 1 or table.statistics.ndim != 1:
            raise InputError(f"pairs.json: the {method} table's pairs and values differ in number")
        if not np.isfinite(table.statistics).all() or (log10 is not None and not np.isfinite(table.log10_pvalues).all()):
            raise InputError(f"pairs.json: the {method} null holds NaN or infinite values; refusing to use it")
        return table

    def matrix(self, names: Sequence[str]) -> np.ndarray:
        """Symmetric similarity matrix over ``names`` (NaN where a pair is not in the table, and on the diagonal)."""
        index = {name: i for i, name in enumerate(names)}
        matrix = np.full((len(names), len(names)), np.nan)
        for (a, b), value in zip(self.pairs, self.statistics):
            if a in index and b in index:
                matrix[index[a], index[b]] = matrix[index[b], index[a]] = value
        return matrix

    def without(self, excluded: set[str]) -> PairTable:
        """The pairs that involve none of ``excluded`` (e.g. a suspect that is also a member)."""
        return self.subset([i for i, (a, b) in enumerate(self.pairs) if a not in excluded and b not in excluded])

    def subset(self, keep: Sequence[int]) -> PairTable:
        """The pairs at indices ``keep`` (e.g. those a comparability rule keeps)."""
        keep = list(keep)
        return PairTable(self.method, tuple(self.pairs[i] for i in keep), self.statistics[keep],
                         None if self.log10_pvalues is None else self.log10_pvalues[keep], self.skipped)


Fingerprinted = tuple[dict, dict[str, bytes], dict[str, str]]


def _fingerprint_model(task: tuple[str, int, tuple[str, ...], str | None]) -> Fingerprinted:
    """Worker: summarise, content-hash and fingerprint one checkpoint with every method (picklable for pools/Dask)."""
    path, seed, method_names, mapping = task
    prints: dict[str, bytes] = {}
    reasons: dict[str, str] = {}
    with open_checkpoint(path) as checkpoint:
        roles = assign_roles(checkpoint, mapping)
        summary = summarize(checkpoint, roles)
        model = Model.of(checkpoint, roles)
        for name in method_names:
            method = get_method(name)
            if method.fingerprint_kind in prints:
                continue
            if reason := method.requirement(model):
                reasons[method.fingerprint_kind] = reason
                continue
            try:
                prints[method.fingerprint_kind] = method.extract(model, seed).to_bytes()
            except Inapplicable as exc:
                reasons[method.fingerprint_kind] = str(exc)
        files = checkpoint.file_hashes()
        content = tensor_content_digest(checkpoint.tensors.values())
    return {"architecture": architecture(summary), "hub": summary.hub, "files": files, "content": content}, prints, reasons


def _current_versions() -> dict[str, int]:
    """Fingerprint kind -> the version this release of the methods computes."""
    return {method.fingerprint_kind: method.fingerprint_version for method in map(get_method, REGISTRY)}


def _fingerprint_path(member: str, kind: str) -> str:
    return f"{store.MODELS}/{member}/{kind}.npz"


def parse_fingerprint(data: bytes, where: str) -> Fingerprint:
    """A stored fingerprint, refused when any of its numbers is NaN or infinite."""
    fingerprint = Fingerprint.from_bytes(data, where)
    for name, array in fingerprint.arrays.items():
        if array.dtype.kind in "fc" and not np.isfinite(array).all():
            raise InputError(f"{where}: fingerprint array '{name}' holds NaN or infinite values; refusing to use it")
    return fingerprint


def manifest_document(header: Mapping[str, Any], members: Mapping[str, Member]) -> dict:
    """The canonical content of ``population.json`` that the population digest covers."""
    return {"format": FORMAT, "format_version": FORMAT_VERSION, "name": header["name"],
            "description": header.get("description", ""), "seed": int(header["seed"]),
            "members": [members[n].to_dict() for n in sorted(members)]}


def population_digest(document: Mapping[str, Any], fingerprint_digests: Mapping[tuple[str, str], str]) -> str:
    """Hex SHA-256 naming a population: the canonical manifest, then each fingerprint's SHA-256.

    Canonical order: the prefix line; the manifest content
    (:func:`manifest_document`) as JSON with sorted keys, no spaces, ASCII
    only, then a newline; then one line ``member/kind sha256`` per stored
    fingerprint, sorted by member then kind.  The pairs cache is not covered:
    it is derived from these (and recomputed by ``verify --recompute`` and by
    bundle import).
    """
    lines = [json.dumps(document, sort_keys=True, separators=(",", ":"), ensure_ascii=True)]
    lines += [f"{member}/{kind} {digest}" for (member, kind), digest in sorted(fingerprint_digests.items())]
    return store.sha256(DIGEST_PREFIX + "\n".join(lines).encode() + b"\n")


def parse_manifest(data: bytes, where: str, *, upgrade: bool = False) -> tuple[dict, dict[str, Member]]:
    """Header and members of a manifest's bytes, type-checked; one line when anything is off.

    ``upgrade``: read a v1 manifest as v2 (members without a content hash, no pairs digest).
    """
    document = parse_json(data, where=where, what="population file")
    if not isinstance(document, dict) or document.get("format") != FORMAT:
        raise InputError(f"{where}: not an {FORMAT} file")
    if document.get("format_version") == 1 and upgrade:
        document = _upgraded(document, where)
    elif document.get("format_version") == 1:
        raise InputError(f"{where}: population format v1, from an earlier release; run `audit baseline migrate "
                         f"{Path(where).parent} [MODEL...]` once to check and upgrade it")
    if document.get("format_version") != FORMAT_VERSION:
        raise InputError(f"{where}: not an {FORMAT} v{FORMAT_VERSION} file")
    name, seed = document.get("name"), document.get("seed")
    if not isinstance(name, str) or not isinstance(document.get("description", ""), str):
        raise InputError(f"{where}: name and description must be strings")
    if not isinstance(seed, int) or isinstance(seed, bool) or not 0 <= seed < 2**63:
        raise InputError(f"{where}: seed must be a whole number from 0 to 2^63 - 1")
    pairs = document.get("pairs")
    if pairs is not None and not (isinstance(pairs, dict) and isinstance(pairs.get("sha256"), str) and SHA256.match(pairs["sha256"])):
        raise InputError(f"{where}: pairs must record the SHA-256 of pairs.json")
    records = document.get("members")
    if not isinstance(records, list):
        raise InputError(f"{where}: members must be a list")
    members: dict[str, Member] = {}
    for record in records:
        member = Member.from_dict(record, where)
        if member.name in members:
            raise InputError(f"{where}: two members are named '{member.name}'")
        members[member.name] = member
    return document, members


def _upgraded(document: dict, where: str) -> dict:
    """A v1 manifest in v2 form: ``sha256`` (the file listing digest, derived from ``files``) becomes ``content: null``."""
    members = document.get("members")
    if not isinstance(members, list) or not all(isinstance(m, dict) for m in members):
        raise InputError(f"{where}: members must be a list of objects")
    upgraded = [{**{k: v for k, v in m.items() if k != "sha256"}, "content": None} for m in members]
    return {**document, "format_version": FORMAT_VERSION, "members": upgraded, "pairs": None}


class Population:
    """A baseline population folder, read and checked whole."""

    def __init__(self, root: Path, header: Mapping[str, Any], members: dict[str, Member],
                 prints: dict[tuple[str, str], Fingerprint] | None = None, tables: dict[str, PairTable] | None = None) -> None:
        self.root = root
        self.name: str = header["name"]
        self.description: str = header.get("description", "")
        self.seed: int = int(header["seed"])
        self.members = members
        self._prints = prints or {}
        self._tables = tables

    # ---- identity ----------------------------------------------------------------------------
    @property
    def digest(self) -> str:
        """Hex SHA-256 over the manifest and the fingerprints (see :func:`population_digest`)."""
        return population_digest(self.manifest(), self._fingerprint_digests())

    def manifest(self) -> dict:
        """The manifest's content, as the digest covers it (no pairs cache)."""
        return manifest_document({"name": self.name, "description": self.description, "seed": self.seed}, self.members)

    def _fingerprint_digests(self) -> dict[tuple[str, str], str]:
        return {(name, kind): digest for name, m in self.members.items() for kind, digest in m.fingerprints.items()}

    # ---- reading -----------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path, *, recompute_pairs: bool = False) -> Population:
        """Read and check a population (under its lock, finishing or undoing any interrupted commit).

        ``recompute_pairs``: compute every pair from the fingerprints instead
        of reading the (checked) cache, as an independent verifier does.
        """
        root = check_name(root)
        if status(root / store.MANIFEST, "population") is None:
            raise InputError(f"{root}: not a baseline population (no {store.MANIFEST}); create one with `audit baseline add`")
        with store.locked(root, write=False) as held:
            return cls._read(root, settle=held, recompute_pairs=recompute_pairs)

    @classmethod
    def migrate(cls, root: str | Path, paths: Sequence[str | Path] = (), *, workers: int | None = None) -> Population:
        """Upgrade a population written by an earlier release to this format, checking every fingerprint.

        Fingerprint files are kept byte for byte; the pairs are recomputed
        from them (the old cache is not trusted).  ``paths``: checkpoints of
        members (matched by their files), whose tensor content hash is then
        recorded; members without one are matched by their files only.
        """
        root = check_name(root)
        if status(root / store.MANIFEST, "population") is None:
            raise InputError(f"{root}: not a baseline population (no {store.MANIFEST})")
        with store.locked(root, write=True):
            population = cls._read(root, settle=False, upgrade=True, recompute_pairs=True)
            population._commit({}, {})
        if paths:
            population.migrate_content(paths, workers=workers)
        return population

    @classmethod
    def _read(cls, root: Path, *, settle: bool, recompute_pairs: bool = False, upgrade: bool = False) -> Population:
        path = root / store.MANIFEST
        data = read_file(path, limit=LIMITS["population"], what="population")
        document, members = parse_manifest(data, str(path), upgrade=upgrade)
        pairs_digest = (document.get("pairs") or {}).get("sha256")
        if settle:
            store.settle(root, cls._expected(members, pairs_digest), set(members))
        prints = {}
        for name, member in sorted(members.items()):
            for kind, digest in sorted(member.fingerprints.items()):
                relative = _fingerprint_path(name, kind)
                prints[name, kind] = parse_fingerprint(store.read_checked(root, relative, digest), str(root / relative))
        population = cls(root, document, members, prints)
        if recompute_pairs or pairs_digest is None:
            population._tables = population._compute_tables()
        else:
            population._tables = population._read_tables(store.read_checked(root, store.PAIRS, pairs_digest))
        return population

    @staticmethod
    def _expected(members: Mapping[str, Member], pairs_digest: str | None) -> dict[str, str]:
        expected = {_fingerprint_path(name, kind): digest for name, m in members.items() for kind, digest in m.fingerprints.items()}
        if pairs_digest:
            expected[store.PAIRS] = pairs_digest
        return expected

    def _read_tables(self, data: bytes) -> dict[str, PairTable]:
        """The pairs cache, after its SHA-256 was checked: refused unless made for exactly this population."""
        where = str(self.root / store.PAIRS)
        document = parse_json(data, where=where, what="pairs cache")
        if not isinstance(document, dict) or document.get("population") != self.digest or not isinstance(document.get("methods"), dict):
            raise InputError(f"{where}: made for another population than the one {store.MANIFEST} describes; refusing it")
        versions = _current_versions()
        tables = {}
        for name, table in document["methods"].items():
            if name in REGISTRY and isinstance(table, dict) and table.get("fingerprint_version") == versions[get_method(name).fingerprint_kind]:
                tables[name] = PairTable.from_dict(name, table)
        return tables

    @classmethod
    def open_or_create(cls, root: str | Path, *, name: str | None = None, seed: int = 0, description: str = "") -> Population:
        """The population at ``root``, or a new empty one (written at its first commit)."""
        root = check_name(root)
        if status(root / store.MANIFEST, "population") is not None:
            return cls.open(root)
        if not 0 <= seed < 2**63:
            raise InputError(f"seed must be a whole number from 0 to 2^63 - 1, not {seed}")
        return cls(root, {"name": name or root.resolve().name, "seed": seed, "description": description}, {}, tables={})

    def fingerprint(self, member: str, kind: str) -> Fingerprint | None:
        return self._prints.get((member, kind))

    # ---- growing -----------------------------------------------------------------------------
    def add(
        self,
        paths: Sequence[str | Path],
        *,
        names: Sequence[str] | None = None,
        source: str = "",
        licence: str = "",
        notes: str = "",
        mapping: str | None = None,
        scheduler: str | None = None,
        workers: int | None = None,
    ) -> list[Member]:
        """Fingerprint ``paths`` with every registered method and add them as members, all or none.

        A name already taken, or weights already present (by content, in any
        file layout), is refused before anything is written.
        """
        names = list(names) if names else [default_member_name(p) for p in paths]
        if len(names) != len(paths):
            raise InputError(f"{len(paths)} model(s) but {len(names)} name(s)")
        for name in names:
            if not NAME.match(name):
                raise InputError(f"member name '{name[:40]}' must be letters, digits, '.', '_' or '-' (at most 128)")
            if name in self.members or names.count(name) > 1:
                raise InputError(f"a member named '{name}' is already in population '{self.name}'")
        results = self._fingerprint_all(paths, mapping, scheduler, workers)
        with store.locked(self.root, write=True):
            self._reload()
            by_content = {m.content: m.name for m in self.members.values() if m.content}
            by_files = {m.sha256: m.name for m in self.members.values()}
            added: dict[str, Member] = {}
            for name, (info, prints, reasons) in zip(names, results):
                if name in self.members:
                    raise InputError(f"a member named '{name}' is already in population '{self.name}'")
                same = by_content.get(info["content"]) or by_files.get(listing_digest(info["files"]))
                if same:
                    raise InputError(f"'{name}' has the same weights as member '{same}' (same tensors, whatever the file layout)")
                by_content[info["content"]] = name
                hub = info["hub"]
                origin = source or (f"Hugging Face {hub['repo_id']} commit {hub['commit']}" if hub else "")
                added[name] = Member(name, origin, licence, notes, info["content"], info["files"],
                                     info["architecture"], {}, reasons)
            self._commit(added, {name: result[1] for name, result in zip(names, results)})
        return [self.members[name] for name in names]

    def refresh(
        self,
        paths: Sequence[str | Path],
        *,
        mapping: str | None = None,
        scheduler: str | None = None,
        workers: int | None = None,
    ) -> list[Member]:
        """Fingerprint members again from their checkpoints (after a method's fingerprint changed).

        Each path must hold the weights of a member (matched by the content
        hash of its tensors, or by its files for members recorded without
        one); its fingerprints of every kind are replaced, its metadata kept.
        """
        results = self._fingerprint_all(paths, mapping, scheduler, workers)
        with store.locked(self.root, write=True):
            self._reload()
            changed: dict[str, Member] = {}
            prints: dict[str, dict[str, bytes]] = {}
            for path, (info, made, reasons) in zip(paths, results):
                member = self._matching(info)
                if member is None:
                    raise InputError(f"{path}: its weights match no member of population '{self.name}' (a member's "
                                     "checkpoint, unchanged, is needed to fingerprint it again)")
                changed[member.name] = dataclasses.replace(member, content=info["content"], inapplicable=reasons)
                prints[member.name] = made
            self._commit(changed, prints)
        return [self.members[name] for name in changed]

    def migrate_content(self, paths: Sequence[str | Path], *, workers: int | None = None) -> list[Member]:
        """Record the content hash of members whose checkpoints are given (matched by their files); fingerprints unchanged."""
        infos = run_tasks(_content_of, [str(p) for p in paths], workers=workers, desc="hashing")
        with store.locked(self.root, write=True):
            self._reload()
            changed = {}
            for path, info in zip(paths, infos):
                member = self._matching(info)
                if member is None:
                    raise InputError(f"{path}: its files match no member of population '{self.name}'")
                changed[member.name] = dataclasses.replace(member, content=info["content"])
            self._commit(changed, {})
        return [self.members[name] for name in changed]

    def _matching(self, info: Mapping[str, Any]) -> Member | None:
        files = listing_digest(info["files"])
        return next((m for m in self.members.values() if m.content == info["content"] or (m.content is None and m.sha256 == files)), None)

    def _fingerprint_all(self, paths: Sequence[str | Path], mapping: str | None, scheduler: str | None,
                         workers: int | None) -> list[Fingerprinted]:
        """Every kind of fingerprint of every checkpoint, in parallel (see :func:`_fingerprint_model`)."""
        tasks = [(str(p), self.seed, tuple(REGISTRY), mapping) for p in paths]
        return run_tasks(_fingerprint_model, tasks, scheduler=scheduler, workers=workers, desc="fingerprinting")

    def _reload(self) -> None:
        """Under the lock: take the population as it is on disk now (another writer may have committed)."""
        if not (self.root / store.MANIFEST).is_file():
            if not store.is_empty_folder(self.root):
                raise InputError(f"{self.root}: not a baseline population and not empty; choose a new folder")
            store.settle(self.root, {}, set())
            return
        current = Population._read(self.root, settle=True)
        if current.seed != self.seed:
            raise InputError(f"{self.root}: the population was created meanwhile with seed {current.seed}, not {self.seed}")
        self.name, self.description, self.members = current.name, current.description, current.members
        self._prints, self._tables = current._prints, current._tables

    def _commit(self, changed: Mapping[str, Member], prints: Mapping[str, Mapping[str, bytes]]) -> None:
        """Under the lock: stage the changed members' fingerprints and the pairs, then commit the manifest.

        ``prints`` holds, for each member whose fingerprints are replaced, all
        of its new fingerprint files by kind.
        """
        members = dict(self.members)
        files: dict[str, bytes] = {}
        new_prints = {key: fp for key, fp in self._prints.items() if key[0] not in prints}
        for name, member in changed.items():
            if name in prints:
                kinds = prints[name]
                for kind, data in kinds.items():
                    files[_fingerprint_path(name, kind)] = data
                    new_prints[name, kind] = parse_fingerprint(data, f"new fingerprint {name}/{kind}")
                member = dataclasses.replace(member, fingerprints={k: store.sha256(d) for k, d in sorted(kinds.items())})
            members[name] = member
        old_tables = self._tables or {}
        self.members, self._prints = members, new_prints
        self._tables = self._compute_tables(old_tables, reuse_all_but=set(prints))
        document = self.manifest()
        pairs = self._pairs_bytes()
        files[store.PAIRS] = pairs
        store.stage(self.root, files)
        document["pairs"] = {"sha256": store.sha256(pairs)}
        write_atomic(self.root / store.MANIFEST, (json.dumps(document, indent=1, sort_keys=True) + "\n").encode())
        store.settle(self.root, self._expected(members, document["pairs"]["sha256"]), set(members))

    def _pairs_bytes(self) -> bytes:
        versions = _current_versions()
        document = {"population": self.digest, "seed": self.seed,
                    "methods": {n: {**t.to_dict(), "fingerprint_version": versions[get_method(n).fingerprint_kind]}
                                for n, t in sorted((self._tables or {}).items())}}
        return (json.dumps(document, sort_keys=True, allow_nan=False) + "\n").encode()

    def outdated(self) -> dict[str, list[str]]:
        """Fingerprint kinds this version cannot use, by member: stored at another version, or never made.

        A kind recorded as inapplicable to a member (a method that does not
        apply to its architecture) is not outdated.
        """
        found: dict[str, list[str]] = {}
        for kind, version in _current_versions().items():
            for name, member in sorted(self.members.items()):
                if kind in member.inapplicable:
                    continue
                fingerprint = self.fingerprint(name, kind)
                if fingerprint is None or fingerprint.version != version:
                    found.setdefault(name, []).append(kind)
        return found

    # ---- pairs: null and calibration ---------------------------------------------------------
    def _compute_tables(self, old: Mapping[str, PairTable] | None = None, reuse_all_but: set[str] | None = None) -> dict[str, PairTable]:
        """Every method whose fingerprints are current, over every member pair.

        With ``old`` tables (checked, of the population before this commit),
        pairs of members outside ``reuse_all_but`` are taken from them: each
        pair's numbers depend only on its two fingerprints and the seed.
        """
        outdated = {kind for kinds in self.outdated().values() for kind in kinds}
        tables = {}
        for name in REGISTRY:
            method = get_method(name)
            if method.fingerprint_kind not in outdated:
                previous = (old or {}).get(name)
                tables[name] = self._pair_table(method, previous, reuse_all_but or set())
        return tables

    def _pair_table(self, method: Method, old: PairTable | None = None, changed: set[str] = frozenset()) -> PairTable:
        known: dict[tuple[str, str], tuple[float, float | None] | str] = {}
        if old is not None:
            for i, pair in enumerate(old.pairs):
                known[pair] = (float(old.statistics[i]), None if old.log10_pvalues is None else float(old.log10_pvalues[i]))
            known |= {tuple(key.split("|", 1)): reason for key, reason in old.skipped.items()}
        pairs, statistics, log10_p, skipped = [], [], [], {}
        for a, b in itertools.combinations(sorted(self.members), 2):
            found = known.get((a, b)) if a not in changed and b not in changed else None
            if found is None:
                found = self._pair(method, a, b)
            if isinstance(found, str):
                skipped[f"{a}|{b}"] = found
                continue
            pairs.append((a, b))
            statistics.append(found[0])
            log10_p.append(found[1])
        return PairTable(method.name, tuple(pairs), np.array(statistics, dtype=float),
                         np.array(log10_p, dtype=float) if method.exact else None, skipped)

    def _pair(self, method: Method, a: str, b: str) -> tuple[float, float | None] | str:
        """One pair's statistic and within-pair log10 p, or why the pair is not comparable."""
        fa, fb = self.fingerprint(a, method.fingerprint_kind), self.fingerprint(b, method.fingerprint_kind)
        if fa is None or fb is None:
            return "no fingerprint (method does not apply to a member)"
        if reason := method.mismatch(fa, fb):
            return reason
        try:
            statistic = method.statistic(fa, fb)
            test = method.test(fa, fb, derive_seed(self.seed, "test", method.name)) if method.exact else None
        except Inapplicable as exc:
            return str(exc)
        return statistic, None if test is None else test.log10_pvalue

    def pair_table(self, method: str) -> PairTable:
        """The table of ``method``, from the checked cache, else computed now."""
        if self._tables is None:
            self._tables = {}
        if method not in self._tables:
            self._tables[method] = self._pair_table(self._current(get_method(method)))
        return self._tables[method]

    def _current(self, method: Method) -> Method:
        """``method``, once every member holds its current fingerprint (or it does not apply to them)."""
        stale = sorted(name for name, kinds in self.outdated().items() if method.fingerprint_kind in kinds)
        if stale:
            raise InputError(
                f"baseline '{self.name}': {len(stale)} member(s) ({', '.join(stale[:3])}{', ...' if len(stale) > 3 else ''}) "
                f"lack the {method.fingerprint_kind} fingerprint (version {method.fingerprint_version}) this version of "
                f"the tool computes; run `audit baseline refresh {self.root} MODEL...` with the members' checkpoints")
        return method

    def member_with(self, sha256: str) -> str | None:
        """The member whose files (listing digest) or tensors (content hash) have this digest."""
        return next((m.name for m in self.members.values() if sha256 in (m.sha256, m.content)), None)


def _content_of(path: str) -> dict:
    """Worker: a checkpoint's file hashes and tensor content hash."""
    with open_checkpoint(path) as checkpoint:
        return {"files": checkpoint.file_hashes(), "content": tensor_content_digest(checkpoint.tensors.values())}
