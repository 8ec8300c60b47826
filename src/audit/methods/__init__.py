"""Fingerprint methods behind one interface (:class:`Method`) and their registry.

Adding a method: write one module with a :class:`Method` subclass and add it
to ``_CLASSES`` below (``REGISTRY`` imports it when it is asked for).

Fingerprint sizes with the default parameters for a Llama-2-7B-shaped model
(32 layers, width 4096, MLP 11008; measured on an all-zero sparse checkpoint
of that shape, arrays only):

    attn-std / attn-std-detrended      1 KiB  (4 x 32 float64 stds)
    norm                             536 KiB  (65 gains x 2048 coordinates)
    pcs                              1.8 MiB  (224 matrices x 16 x 128 samples)
    neuron-match                     4.0 MiB  (32 layers x 128 units x 256 coordinates)
    robust-match                     8.0 MiB  (128 token rows + 3 of 32 layers x 64 units x 2 x 4096)
    head-match                        64 MiB  (4 of 32 layers x 4 sketches x 32 heads x 128 x 512 tokens, float16)
"""

from __future__ import annotations

import importlib
from typing import Iterator, Mapping, Sequence

from audit.errors import InputError
from audit.methods.base import Figure, Fingerprint, Inapplicable, Method, Model

# name -> "module:class", in registry order.  A method's module (and the scipy
# parts it needs) is imported when the method is asked for, so `audit compare
# --methods attn-std` does not import the matching methods' libraries.
_CLASSES = {
    "attn-std": "attn_std:AttnStd",
    "attn-std-detrended": "attn_std:AttnStdDetrended",
    "norm": "norm:Norm",
    "pcs": "pcs:Pcs",
    "neuron-match": "neuron_match:NeuronMatch",
    "robust-match": "robust_match:RobustMatch",
    "aligned-match": "aligned_match:AlignedMatch",
    "layer-map": "layer_map:LayerMap",
    "head-match": "head_match:HeadMatch",
}


class _Registry(Mapping[str, type[Method]]):
    """Method name -> class, each class imported on first use."""

    def __getitem__(self, name: str) -> type[Method]:
        module, cls = _CLASSES[name].split(":")
        return getattr(importlib.import_module(f"audit.methods.{module}"), cls)

    def __iter__(self) -> Iterator[str]:
        return iter(_CLASSES)

    def __len__(self) -> int:
        return len(_CLASSES)

    def __contains__(self, name: object) -> bool:
        return name in _CLASSES


REGISTRY: Mapping[str, type[Method]] = _Registry()


def get_method(name: str, **params: object) -> Method:
    """An instance of the method called ``name`` with ``params`` overriding its defaults."""
    try:
        cls = REGISTRY[name]
    except KeyError:
        raise InputError(f"unknown method '{name}'; choose from {', '.join(REGISTRY)}") from None
    try:
        return cls(**params)
    except TypeError as exc:
        raise InputError(f"method '{name}': bad parameters {params} ({exc})") from None


def tunable(names: Sequence[str] | None, **values: object) -> dict[str, dict[str, object]]:
    """Overrides for the methods among ``names`` (default: all) that declare the parameters in ``values`` tunable."""
    chosen = [REGISTRY[name] for name in names or REGISTRY if name in REGISTRY]
    return {cls.name: found for cls in chosen if (found := {k: v for k, v in values.items() if k in cls.tunable})}


__all__ = ["REGISTRY", "Figure", "Fingerprint", "Inapplicable", "Method", "Model", "get_method", "tunable"]
