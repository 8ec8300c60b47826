"""Reading, growing and querying a baseline population folder."""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import re
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

import numpy as np

from audit.atomic import write_atomic
from audit.checkpoint import open_checkpoint
from audit.checkpoint.hashing import listing_digest
from audit.errors import InputError
from audit.inspection import summarize
from audit.methods import REGISTRY, Fingerprint, Inapplicable, Method, Model, get_method
from audit.parallel import run_tasks
from audit.roles import assign_roles
from audit.stats import derive_seed

FORMAT = "audit-population"
FORMAT_VERSION = 1
SUMMARY_KEYS = ("family", "depth", "hidden", "mlp_width", "vocab", "heads", "kv_heads", "experts", "parameters", "dtypes")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")


@dataclass(frozen=True)
class Member:
    """One independently trained model of the population (metadata; no weights)."""

    name: str
    source: str
    licence: str
    notes: str
    sha256: str
    files: Mapping[str, str]
    architecture: Mapping[str, Any]
    fingerprints: Mapping[str, str] = field(default_factory=dict)  # kind -> SHA-256 of the stored file
    inapplicable: Mapping[str, str] = field(default_factory=dict)  # kind -> why no fingerprint could be made

    def to_dict(self) -> dict:
        return {k: (dict(v) if isinstance(v, Mapping) else v) for k, v in asdict(self).items()}


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
        log10 = data.get("log10_pvalues")
        return cls(method, tuple((a, b) for a, b in data["pairs"]), np.array(data["statistics"], dtype=float),
                   None if log10 is None else np.array(log10, dtype=float), dict(data.get("skipped", {})))

    def without(self, excluded: set[str]) -> PairTable:
        """The pairs that involve none of ``excluded`` (e.g. a suspect that is also a member)."""
        keep = [i for i, (a, b) in enumerate(self.pairs) if a not in excluded and b not in excluded]
        return PairTable(self.method, tuple(self.pairs[i] for i in keep), self.statistics[keep],
                         None if self.log10_pvalues is None else self.log10_pvalues[keep], self.skipped)


def _fingerprint_model(task: tuple[str, int, tuple[str, ...], str | None]) -> tuple[dict, dict[str, bytes], dict[str, str]]:
    """Worker: summarise one checkpoint and fingerprint it with every method (picklable for pools/Dask)."""
    path, seed, method_names, mapping = task
    prints: dict[str, bytes] = {}
    reasons: dict[str, str] = {}
    with open_checkpoint(path) as checkpoint:
        roles = assign_roles(checkpoint, mapping)
        summary = summarize(checkpoint, roles).to_dict()
        model = Model(roles, checkpoint.vocab)
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
    return {"summary": summary, "files": files}, prints, reasons


def _current_versions() -> dict[str, int]:
    """Fingerprint kind -> the version this release of the methods computes."""
    return {method.fingerprint_kind: method.fingerprint_version for method in map(get_method, REGISTRY)}


class Population:
    """A baseline population folder."""

    def __init__(self, root: Path, header: dict, members: dict[str, Member]) -> None:
        self.root = root
        self.name: str = header["name"]
        self.description: str = header.get("description", "")
        self.seed: int = int(header["seed"])
        self.members = members
        self._prints: dict[tuple[str, str], Fingerprint] = {}
        self._tables: dict[str, PairTable] | None = None

    # ---- files -----------------------------------------------------------------------------
    @classmethod
    def open(cls, root: str | Path) -> Population:
        root = Path(root)
        path = root / "population.json"
        try:
            header = json.loads(path.read_text())
        except FileNotFoundError:
            raise InputError(f"{root}: not a baseline population (no population.json); create one with `audit baseline add`") from None
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(f"{path}: unreadable population file ({exc})") from None
        if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
            raise InputError(f"{path}: not an {FORMAT} v{FORMAT_VERSION} file")
        members = {m["name"]: Member(**m) for m in header.get("members", [])}
        return cls(root, header, members)

    @classmethod
    def open_or_create(cls, root: str | Path, name: str | None = None, seed: int = 0, description: str = "") -> Population:
        root = Path(root)
        if (root / "population.json").exists():
            return cls.open(root)
        return cls(root, {"name": name or root.name, "seed": seed, "description": description}, {})

    def _save(self) -> None:
        header = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "name": self.name,
            "description": self.description,
            "seed": self.seed,
            "members": [self.members[n].to_dict() for n in sorted(self.members)],
        }
        write_atomic(self.root / "population.json", (json.dumps(header, indent=1, sort_keys=True) + "\n").encode())

    def fingerprint(self, member: str, kind: str) -> Fingerprint | None:
        if kind not in self.members[member].fingerprints:
            return None
        key = (member, kind)
        if key not in self._prints:
            self._prints[key] = Fingerprint.load(self.root / "models" / member / f"{kind}.npz")
        return self._prints[key]

    # ---- growing ---------------------------------------------------------------------------
    def add(
        self,
        paths: Sequence[str | Path],
        names: Sequence[str] | None = None,
        *,
        source: str = "",
        licence: str = "",
        notes: str = "",
        mapping: str | None = None,
        scheduler: str | None = None,
        workers: int | None = None,
    ) -> list[Member]:
        """Fingerprint ``paths`` with every registered method and add them as members."""
        names = list(names) if names else [Path(p).resolve().name for p in paths]
        if len(names) != len(paths):
            raise InputError(f"{len(paths)} model(s) but {len(names)} name(s)")
        for name in names:
            if not _NAME.match(name):
                raise InputError(f"member name '{name}' must be letters, digits, '.', '_' or '-' (at most 128)")
            if name in self.members or names.count(name) > 1:
                raise InputError(f"a member named '{name}' is already in population '{self.name}'")
        results = self._fingerprint_all(paths, mapping, scheduler, workers)
        known = {m.sha256: m.name for m in self.members.values()}
        added = []
        for name, (info, prints, reasons) in zip(names, results):
            digest = listing_digest(info["files"])
            if digest in known:
                raise InputError(f"'{name}' has the same files as member '{known[digest]}'")
            known[digest] = name
            summary = info["summary"]
            member = Member(name, source, licence, notes, digest, info["files"],
                            {k: summary[k] for k in SUMMARY_KEYS}, self._store(name, prints), reasons)
            self.members[name] = member
            added.append(member)
        self._commit()
        return added

    def refresh(
        self,
        paths: Sequence[str | Path],
        *,
        mapping: str | None = None,
        scheduler: str | None = None,
        workers: int | None = None,
    ) -> list[Member]:
        """Fingerprint members again from their checkpoints (after a method's fingerprint changed).

        Each path must hold exactly the files of a member (checked by SHA-256);
        its fingerprints of every kind are replaced, its metadata kept.
        """
        by_digest = {m.sha256: m for m in self.members.values()}
        results = self._fingerprint_all(paths, mapping, scheduler, workers)
        refreshed = []
        for path, (info, prints, reasons) in zip(paths, results):
            member = by_digest.get(listing_digest(info["files"]))
            if member is None:
                raise InputError(f"{path}: its files match no member of population '{self.name}' (a member's checkpoint, "
                                 "unchanged, is needed to fingerprint it again)")
            self._prints = {key: fp for key, fp in self._prints.items() if key[0] != member.name}
            updated = dataclasses.replace(member, fingerprints=self._store(member.name, prints), inapplicable=reasons)
            self.members[member.name] = updated
            refreshed.append(updated)
        self._commit()
        return refreshed

    def _fingerprint_all(self, paths: Sequence[str | Path], mapping: str | None, scheduler: str | None,
                         workers: int | None) -> list[tuple[dict, dict[str, bytes], dict[str, str]]]:
        """Every kind of fingerprint of every checkpoint, in parallel (see :func:`_fingerprint_model`)."""
        tasks = [(str(p), self.seed, tuple(REGISTRY), mapping) for p in paths]
        return run_tasks(_fingerprint_model, tasks, scheduler=scheduler, workers=workers, desc="fingerprinting")

    def _commit(self) -> None:
        """Save the members and recompute the pairs cache for them."""
        self._tables = None
        self._save()
        self.refresh_pairs()

    def _store(self, member: str, prints: Mapping[str, bytes]) -> dict[str, str]:
        """Write a member's fingerprints; their SHA-256 by kind."""
        folder = self.root / "models" / member
        folder.mkdir(parents=True, exist_ok=True)
        stored = {}
        for kind, data in sorted(prints.items()):
            path = write_atomic(folder / f"{kind}.npz", data)
            stored[kind] = Fingerprint.from_bytes(data, str(path)).digest()
        return stored

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

    # ---- pairs: null and calibration -------------------------------------------------------
    def refresh_pairs(self, methods: Sequence[str] | None = None) -> dict[str, PairTable]:
        """Compute every method over every member pair and cache it in ``pairs.json``.

        Methods whose members' fingerprints are outdated are left out (an
        audit using them says to run ``audit baseline refresh``).
        """
        outdated = {kind for kinds in self.outdated().values() for kind in kinds}
        tables = {}
        for name in methods or REGISTRY:
            method = get_method(name)
            if method.fingerprint_kind not in outdated:
                tables[name] = self._pair_table(method)
        versions = _current_versions()
        document = {"seed": self.seed, "members": self._members_key(),
                    "methods": {n: {**t.to_dict(), "fingerprint_version": versions[get_method(n).fingerprint_kind]}
                                for n, t in tables.items()}}
        write_atomic(self.root / "pairs.json", (json.dumps(document, sort_keys=True) + "\n").encode())
        self._tables = tables
        return tables

    def _members_key(self) -> str:
        """Digest of who the members are and which fingerprints they hold: the pairs cache is valid for it only."""
        listing = {name: dict(m.fingerprints) for name, m in sorted(self.members.items())}
        return hashlib.sha256(json.dumps(listing, sort_keys=True).encode()).hexdigest()

    def _pair_table(self, method: Method) -> PairTable:
        pairs, statistics, log10_p, skipped = [], [], [], {}
        for a, b in itertools.combinations(sorted(self.members), 2):
            fa, fb = self.fingerprint(a, method.fingerprint_kind), self.fingerprint(b, method.fingerprint_kind)
            if fa is None or fb is None:
                skipped[f"{a}|{b}"] = "no fingerprint (method does not apply to a member)"
                continue
            if reason := method.mismatch(fa, fb):
                skipped[f"{a}|{b}"] = reason
                continue
            try:
                statistic = method.statistic(fa, fb)
                test = method.test(fa, fb, derive_seed(self.seed, "test", method.name)) if method.exact else None
            except Inapplicable as exc:
                skipped[f"{a}|{b}"] = str(exc)
                continue
            pairs.append((a, b))
            statistics.append(statistic)
            log10_p.append(None if test is None else test.log10_pvalue)
        return PairTable(method.name, tuple(pairs), np.array(statistics, dtype=float),
                         np.array(log10_p, dtype=float) if method.exact else None, skipped)

    def pair_table(self, method: str) -> PairTable:
        """The cached table of ``method``, computed when the cache is missing or stale."""
        if self._tables is None:
            self._tables = self._cached_tables()
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

    def _cached_tables(self) -> dict[str, PairTable]:
        """The tables in ``pairs.json`` still valid for these members, seed and fingerprint versions."""
        try:
            data = json.loads((self.root / "pairs.json").read_text())
        except (OSError, ValueError):
            return {}
        if data.get("seed") != self.seed or data.get("members") != self._members_key():
            return {}
        versions = _current_versions()
        tables = {}
        for name, table in data.get("methods", {}).items():
            if name in REGISTRY and table.get("fingerprint_version") == versions[get_method(name).fingerprint_kind]:
                tables[name] = PairTable.from_dict(name, table)
        return tables

    def member_with(self, sha256: str) -> str | None:
        return next((m.name for m in self.members.values() if m.sha256 == sha256), None)
