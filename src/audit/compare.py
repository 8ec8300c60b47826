"""Compare two checkpoints with every method: the library behind `audit compare`.

Each method is run independently: a method that does not apply to the pair
(roles missing, shapes differ) is reported with its reason instead of
failing the comparison.  The results document is shaped by
:mod:`audit.format.json`.
"""

from __future__ import annotations

import json
from contextlib import closing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Mapping, Sequence

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.checkpoint.hashing import HashCache, listing_digest
from audit.checkpoint.hub import hub_record
from audit.inspection import architecture, summarize
from audit.methods import REGISTRY, Fingerprint, Inapplicable, Method, Model, get_method
from audit.parallel import progress
from audit.roles import assign_roles
from audit.stats import TestResult, derive_seed


@dataclass(frozen=True)
class ModelInfo:
    """Where a model came from: the path as given, the SHA-256 of every file and how each was obtained,
    and what the audit read from those files (sizes, architecture, config.json), so that a report
    describes exactly the bytes that were hashed without opening the model again."""

    label: str
    path: str
    files: Mapping[str, str]
    family: str
    depth: int
    hashed: Mapping[str, str] = field(default_factory=dict)  # file -> "fresh" | "cache"
    hub: Mapping[str, Any] | None = None  # repository, commit and blob checks when named by Hub id
    resolved: Mapping[str, str] = field(default_factory=dict)  # file -> the absolute path read, symlinks resolved
    sizes: Mapping[str, int] = field(default_factory=dict)  # file -> bytes
    architecture: Mapping[str, Any] = field(default_factory=dict)  # audit.inspection.ARCHITECTURE fields
    config: Mapping[str, Any] | None = None  # config.json as read

    @property
    def hidden(self) -> int | None:
        """Residual width (for the comparability rule)."""
        return self.architecture.get("hidden")

    @property
    def vocab(self) -> int | None:
        """Embedding rows (for the comparability rule)."""
        return self.architecture.get("vocab")

    @property
    def fresh(self) -> bool:
        """Every file hashed now, none taken from the hash cache (what a signed report requires)."""
        return all(self.hashed.get(name, "fresh") == "fresh" for name in self.files)

    @property
    def sha256(self) -> str:
        """One digest for the whole model: SHA-256 of the ``sha256sum``-style listing of its files."""
        return listing_digest(dict(self.files))


@dataclass(frozen=True)
class MethodOutcome:
    """One method on one pair: its result, or why it does not apply."""

    method: Method
    result: TestResult | None
    reason: str | None = None
    fingerprint_bytes: tuple[int, int] | None = None

    @property
    def applicable(self) -> bool:
        return self.result is not None


@dataclass(frozen=True)
class Comparison:
    models: tuple[ModelInfo, ModelInfo]
    seed: int
    outcomes: tuple[MethodOutcome, ...]


def method_list(names: Sequence[str] | None) -> list[str]:
    """The methods to run, in registry order when none are named."""
    return list(REGISTRY) if not names else list(dict.fromkeys(names))


def compare_models(
    path_a: str | Path,
    path_b: str | Path,
    *,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    hash_cache: HashCache | None = None,
) -> Comparison:
    """Run ``methods`` (default: all) on the pair; ``params`` overrides method parameters by method name.

    ``hash_cache`` lets unchanged files' SHA-256 come from the cache (each is marked so in the result).
    """
    with closing(compare_against(path_a, [path_b], methods=methods, seed=seed, params=params,
                                 hash_cache=hash_cache)) as comparisons:
        return next(comparisons)


def compare_against(
    path_a: str | Path,
    paths_b: Sequence[str | Path],
    *,
    methods: Sequence[str] | None = None,
    seed: int = 0,
    params: Mapping[str, Mapping[str, Any]] | None = None,
    hash_cache: HashCache | None = None,
) -> Iterator[Comparison]:
    """One :func:`compare_models` per model in ``paths_b``, A opened and fingerprinted once.

    Scanning a suspect against many candidates reads the suspect's weights
    once per fingerprint kind, not once per candidate; each candidate is
    opened only while it is compared, so memory does not grow with their number.
    Both models' files are hashed on background threads while the methods
    read their tensors (see :mod:`audit.checkpoint.hashing`).
    """
    chosen = [get_method(name, **dict((params or {}).get(name, {}))) for name in method_list(methods)]
    cache: dict[tuple, Fingerprint] = {}
    with open_checkpoint(path_a) as checkpoint_a:
        checkpoint_a.start_hashing(cache=hash_cache)
        model_a = _model(checkpoint_a)
        for path_b in paths_b:
            with open_checkpoint(path_b) as checkpoint_b:
                checkpoint_b.start_hashing(cache=hash_cache)
                model_b = _model(checkpoint_b)
                for slot in [slot for slot in cache if slot[0] == "B"]:
                    del cache[slot]  # the previous candidate's fingerprints
                outcomes = []
                with progress(len(chosen), "methods") as bar:
                    for method in chosen:
                        bar.set_postfix_str(method.name)
                        outcomes.append(run_method(method, [("A", model_a), ("B", model_b)], seed, cache))
                        bar.update()
                infos = (_info("A", path_a, checkpoint_a, model_a), _info("B", path_b, checkpoint_b, model_b))
                yield Comparison(infos, seed, tuple(outcomes))


def _model(checkpoint: Checkpoint) -> Model:
    return Model.of(checkpoint, assign_roles(checkpoint))


def _info(label: str, path: str | Path, checkpoint: Checkpoint, model: Model) -> ModelInfo:
    hashes = checkpoint.hashes()
    files = {n: h.sha256 for n, h in hashes.items()}
    hub = hub_record(checkpoint.source, files) if checkpoint.source is not None else None
    sizes = {str(f.path.relative_to(checkpoint.directory)): f.size for f in checkpoint.files}
    return ModelInfo(label, str(path), files, model.roles.family, model.roles.depth,
                     {n: h.source for n, h in hashes.items()}, hub, checkpoint.resolved_paths(), sizes,
                     architecture(summarize(checkpoint, model.roles, hashes=False, tokenizer=False)), checkpoint.config)


def run_method(
    method: Method, models: Sequence[tuple[str, Model]], seed: int, cache: dict[tuple, Fingerprint] | None = None
) -> MethodOutcome:
    """Fingerprint both models and test; an inapplicable method says why.

    ``models`` is two (key, model) pairs, keys being labels or model names; ``cache`` keeps
    fingerprints by (key, fingerprint kind, parameters, seed) across methods
    and pairs, so methods sharing a fingerprint read the weights once.
    """
    cache = {} if cache is None else cache
    for key, model in models:
        if reason := method.requirement(model):
            return MethodOutcome(method, None, f"model {key}: {reason}")
    try:
        params = json.dumps(method.fingerprint_params(), sort_keys=True)
        slots = [(key, method.fingerprint_kind, params, seed) for key, _ in models]
        missing = [(slot, model) for slot, (_, model) in zip(slots, models) if slot not in cache]
        for (slot, _), fingerprint in zip(missing, method.extract_each([model for _, model in missing], seed)):
            cache[slot] = fingerprint
        prints = [cache[slot] for slot in slots]
        sizes = (prints[0].nbytes, prints[1].nbytes)
        if reason := method.mismatch(*prints):
            return MethodOutcome(method, None, reason, sizes)
        return MethodOutcome(method, method.test(*prints, derive_seed(seed, "test", method.name)), None, sizes)
    except Inapplicable as exc:
        return MethodOutcome(method, None, str(exc))


