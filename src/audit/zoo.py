"""A labelled zoo folder: models plus the ground truth of which pairs are derived.

``labels.json`` holds one entry per model (its parent and derivation) and
``pairs.json`` a list of ``{"a", "b", "label": "derived"|"independent",
"derivation", "disguises", ...}``; models live in ``models/NAME``.  The demo reads the
shipped zoo through this module; the accuracy tables (:mod:`audit.testing.accuracy`)
read any labelled zoo.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from audit.errors import InputError


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
    try:
        labels = json.loads((root / "labels.json").read_text())
        raw_pairs = json.loads((root / "pairs.json").read_text())
    except OSError as exc:
        raise InputError(f"{root}: not a labelled zoo ({exc.strerror}: {exc.filename})") from None
    except json.JSONDecodeError as exc:
        raise InputError(f"{root}: labels.json or pairs.json is not valid JSON ({exc})") from None
    models = labels.get("models", labels)
    pairs = []
    for item in raw_pairs:
        disguises = item.get("disguises") or []
        if (item.get("label") not in ("derived", "independent") or item.get("a") not in models or item.get("b") not in models
                or not isinstance(disguises, list) or not all(isinstance(d, str) for d in disguises)):
            raise InputError(f"{root}/pairs.json: bad pair {item!r} (labels must be derived/independent, models in labels.json, "
                             "disguises a list of names)")
        pairs.append(LabelledPair(item["a"], item["b"], item["label"], item.get("derivation"), bool(item.get("hard_negative")),
                                  tuple(disguises)))
    return Zoo(root, models, tuple(pairs))
