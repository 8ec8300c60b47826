"""The method interface: what a method needs, its fingerprint, its test.

A method reads a :class:`Model` once into a small :class:`Fingerprint`
(per-layer scalars, gain vectors or seeded subsamples of weights, never whole
weight matrices), and tests two fingerprints against each other.  Baseline
populations store fingerprints, so everything a test needs must be in them,
and two fingerprints are comparable only when they were made with the same
method version, parameters and seed (the same sampled positions).
"""

from __future__ import annotations

import hashlib
import io
import json
import zipfile
from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, Mapping, Sequence

import numpy as np

from audit.atomic import write_atomic
from audit.checkpoint.vocabulary import Vocabulary
from audit.errors import InputError
from audit.files import LIMITS, parse_json, read_file
from audit.roles import RoleMap
from audit.stats import TestResult

if TYPE_CHECKING:
    from audit.checkpoint import Checkpoint

FORMAT = "audit-fingerprint"
FORMAT_VERSION = 1
_HEADER = "fingerprint.json"
_ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # fixed member timestamps: same content, same bytes


@dataclass(frozen=True)
class Model:
    """What methods read from a checkpoint: its roles and, when shipped, its vocabulary.

    ``vocab`` maps token strings to ids; ``vocabulary`` is the same tokenizer
    read in full (decoded token texts), which aligning across different
    tokenizers needs.
    """

    roles: RoleMap
    vocab: Mapping[str, int] | None = None
    vocabulary: Vocabulary | None = None

    @staticmethod
    def of(checkpoint: Checkpoint, roles: RoleMap) -> Model:
        """``checkpoint``'s model; its tokenizer is read when a method first asks for it (attn-std never does)."""
        return _CheckpointModel(roles, checkpoint)


class _CheckpointModel(Model):
    """A :class:`Model` whose vocabulary is its checkpoint's, read on first use (the checkpoint caches it)."""

    def __init__(self, roles: RoleMap, checkpoint: Checkpoint) -> None:
        object.__setattr__(self, "roles", roles)
        object.__setattr__(self, "_checkpoint", checkpoint)

    @property  # type: ignore[override]
    def vocab(self) -> Mapping[str, int] | None:
        return self._checkpoint.vocab

    @property  # type: ignore[override]
    def vocabulary(self) -> Vocabulary | None:
        return self._checkpoint.vocabulary


@dataclass(frozen=True)
class Fingerprint:
    """A method's small, storable summary of one model.

    ``params`` are the extraction parameters (budgets, sample sizes), ``seed``
    the seed of the sampled positions (None when nothing is sampled), ``meta``
    JSON-ready descriptive data (labels, shapes), ``arrays`` the numbers.
    """

    method: str
    version: int
    seed: int | None
    params: Mapping[str, Any]
    meta: Mapping[str, Any]
    arrays: Mapping[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:
        # C order, as stored: a fingerprint just made and the same one loaded from disk must give
        # bit-identical results (BLAS sums in a different order for a transposed layout)
        object.__setattr__(self, "arrays", {name: _little_endian(a) for name, a in self.arrays.items()})

    @property
    def nbytes(self) -> int:
        return sum(a.nbytes for a in self.arrays.values())

    def header(self) -> dict:
        return {"format": FORMAT, "format_version": FORMAT_VERSION, "method": self.method, "version": self.version,
                "seed": self.seed, "params": dict(self.params), "meta": dict(self.meta)}

    def to_bytes(self) -> bytes:
        """A deterministic NPZ: ``fingerprint.json`` plus one ``.npy`` per array (``numpy.load`` reads it)."""
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w", zipfile.ZIP_STORED) as archive:
            _put(archive, _HEADER, json.dumps(self.header(), sort_keys=True, separators=(",", ":")).encode())
            for name in sorted(self.arrays):
                npy = io.BytesIO()
                np.lib.format.write_array(npy, self.arrays[name], allow_pickle=False)
                _put(archive, f"{name}.npy", npy.getvalue())
        return buffer.getvalue()

    def digest(self) -> str:
        return hashlib.sha256(self.to_bytes()).hexdigest()

    def save(self, path: str | Path) -> Path:
        return write_atomic(path, self.to_bytes())

    @classmethod
    def from_bytes(cls, data: bytes, source: str = "fingerprint") -> Fingerprint:
        try:
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                header = parse_json(archive.read(_HEADER), where=None, what="fingerprint header")
                if header.get("format") != FORMAT or header.get("format_version") != FORMAT_VERSION:
                    raise ValueError(f"not an {FORMAT} version {FORMAT_VERSION} file")
                arrays = {}
                for name in archive.namelist():
                    if name.endswith(".npy"):
                        with archive.open(name) as member:
                            arrays[name[:-4]] = np.lib.format.read_array(io.BytesIO(member.read()), allow_pickle=False)
            return cls(header["method"], int(header["version"]), header["seed"], header["params"], header["meta"], arrays)
        except (zipfile.BadZipFile, KeyError, ValueError, TypeError, OSError) as exc:
            raise InputError(f"{source}: unreadable fingerprint ({exc})") from None

    @classmethod
    def load(cls, path: str | Path) -> Fingerprint:
        return cls.from_bytes(read_file(path, limit=LIMITS["fingerprint"], what="fingerprint"), str(path))


def _put(archive: zipfile.ZipFile, name: str, data: bytes) -> None:
    info = zipfile.ZipInfo(name, date_time=_ZIP_EPOCH)
    info.external_attr = 0o644 << 16
    archive.writestr(info, data)


def _little_endian(array: np.ndarray) -> np.ndarray:
    array = np.ascontiguousarray(array)
    return array.astype(array.dtype.newbyteorder("<")) if array.dtype.byteorder == ">" else array


@dataclass(frozen=True)
class Figure:
    """A figure a method asks the report for: a plot function of :mod:`audit.report.plots`, its data, a caption.

    ``per_model``: the plot also takes the two models' labels (``label_a``, ``label_b``).
    """

    plot: str
    data: Mapping[str, Any]
    caption: str
    per_model: bool = False


class Inapplicable(Exception):
    """Raised by a method when a model or a pair is outside what it can compare; the message says why."""


class Method(ABC):
    """One way of comparing two models.

    Subclasses are frozen dataclasses whose fields are their parameters; the
    class attributes below describe the method for reports.
    """

    name: ClassVar[str]
    measures: ClassVar[str]  # what it measures, one sentence
    survives: ClassVar[str]  # which transformations it survives / is defeated by
    exact: ClassVar[bool]  # the within-pair null is exact under H0 (given the stated assumptions)
    calibrated: ClassVar[bool] = True  # False: reported, but must not count as evidence yet
    caveat: ClassVar[str | None] = None
    reference: ClassVar[str] = ""  # where the method comes from, for the report
    explanation: ClassVar[str] = ""  # the method in plain words, for readers who are not specialists
    reads_embeddings: ClassVar[bool] = False  # evidence may come from untrained token rows (reported apart)
    correlation: ClassVar[bool] = True  # the statistic lies in [-1, 1]: Fisher z for its population tail
    discrete: ClassVar[bool] = False  # exact null on few values: p-values are conservative, not uniform
    tunable: ClassVar[tuple[str, ...]] = ()  # parameters a user may change (`audit compare --budget`)
    population_heatmap: ClassVar[bool] = False  # the report shows its similarity between every two baseline models
    fingerprint_name: ClassVar[str | None] = None  # share another method's fingerprint
    fingerprint_version: ClassVar[int] = 1

    @property
    def fingerprint_kind(self) -> str:
        return self.fingerprint_name or self.name

    def fingerprint_params(self) -> dict[str, Any]:
        """Parameters that change the fingerprint (two fingerprints compare only if these agree)."""
        return {}

    @abstractmethod
    def requirement(self, model: Model) -> str | None:
        """Why this method cannot fingerprint ``model`` (None when it can)."""

    @abstractmethod
    def extract(self, model: Model, seed: int) -> Fingerprint:
        """Read the fingerprint, tensor by tensor (memory stays bounded by one tensor)."""

    def extract_each(self, models: Sequence[Model], seed: int) -> list[Fingerprint]:
        """:meth:`extract` of each model; a method may read them together (attn-std reduces both models'
        tensors on one set of worker processes)."""
        return [self.extract(model, seed) for model in models]

    def mismatch(self, a: Fingerprint, b: Fingerprint) -> str | None:
        """Why ``a`` and ``b`` cannot be compared (None when they can); data-dependent
        reasons found while comparing are raised as :class:`Inapplicable`."""
        for fp in (a, b):
            if fp.method != self.fingerprint_kind or fp.version != self.fingerprint_version:
                return f"fingerprint is {fp.method} v{fp.version}, {self.fingerprint_kind} v{self.fingerprint_version} needed"
        if a.seed != b.seed:
            return f"fingerprints sampled with different seeds ({a.seed} vs {b.seed})"
        if dict(a.params) != dict(b.params):
            return f"fingerprints made with different parameters ({dict(a.params)} vs {dict(b.params)})"
        return None

    @abstractmethod
    def statistic(self, a: Fingerprint, b: Fingerprint) -> float:
        """The similarity alone (what a baseline population's null is made of)."""

    @abstractmethod
    def test(self, a: Fingerprint, b: Fingerprint, seed: int) -> TestResult:
        """Within-pair test of H0 (independent training); ``seed`` drives any resampling."""

    def detail(self, details: Mapping[str, Any]) -> str | None:
        """One line of what this method found beyond its statistic (``details`` of its result), or None."""
        return None

    def figures(self, details: Mapping[str, Any]) -> list[Figure]:
        """The report's figures of this method's own result (population and calibration figures are generic)."""
        return []

    def make(self, seed: int | None, meta: Mapping[str, Any], arrays: Mapping[str, np.ndarray]) -> Fingerprint:
        """A fingerprint of this method's kind (helper for :meth:`extract`)."""
        return Fingerprint(self.fingerprint_kind, self.fingerprint_version, seed, self.fingerprint_params(), meta, arrays)
