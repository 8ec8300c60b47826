"""A labelled zoo folder: models plus the ground truth of which pairs are derived.

``labels.json`` holds one entry per model (its parent and derivation) and
``pairs.json`` a list of ``{"a", "b", "label": "derived"|"independent",
"derivation", "disguises", ...}``; models live in ``models/NAME``.  The demo reads the
shipped zoo through this module; the accuracy tables (:mod:`audit.testing.accuracy`)
read any labelled zoo.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from audit import schema
from audit.errors import InputError, SchemaError, shown
from audit.files import LIMITS, read_json_file


@dataclass(frozen=True)
class LabelledPair:
    a: str
    b: str
    label: str  # "derived" or "independent"
    derivation: str | None
    hard_negative: bool = False
    disguises: tuple[str, ...] = ()  # function-preserving disguises and depth changes separating a and b


@dataclass(frozen=True)
class Zoo:
    root: Path
    labels: dict
    pairs: tuple[LabelledPair, ...]

    def model_path(self, name: str) -> Path:
        return self.root / "models" / name


def load_zoo(root: str | Path) -> Zoo:
    """Read a labelled zoo folder; :class:`InputError` if it is malformed."""
    root = Path(root)
    labels = schema.obj(read_json_file(root / "labels.json", limit=LIMITS["zoo"], what="zoo labels"), root / "labels.json",
                        "labels.json")
    raw_pairs = read_json_file(root / "pairs.json", limit=LIMITS["zoo"], what="zoo pairs")
    if not isinstance(raw_pairs, list):
        raise SchemaError(root / "pairs.json", "pairs.json", "a list of pairs")
    models = schema.obj(labels.get("models", labels), root / "labels.json", "models")
    pairs = []
    for item in raw_pairs:
        disguises = (item.get("disguises") or []) if isinstance(item, dict) else None
        if (not isinstance(item, dict) or item.get("label") not in ("derived", "independent")
                or not isinstance(item.get("a"), str) or not isinstance(item.get("b"), str)
                or item["a"] not in models or item["b"] not in models
                or not isinstance(disguises, list) or not all(isinstance(d, str) for d in disguises)):
            raise InputError(f"{root}/pairs.json: bad pair {shown(repr(item), 200)} (labels must be derived/independent, "
                             "models in labels.json, disguises a list of names)")
        pairs.append(LabelledPair(item["a"], item["b"], item["label"], item.get("derivation"), bool(item.get("hard_negative")),
                                  tuple(disguises)))
    return Zoo(root, models, tuple(pairs))
