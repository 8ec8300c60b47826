"""Statistical audit of model provenance.

Data flows one way: files -> checkpoint -> roles -> fingerprints -> tests ->
evidence -> report -> signature.  This package exposes each layer as a module;
the command line (:mod:`audit.cli`) is a thin wrapper over the same API.

The names below are imported on first use (PEP 562), so ``import audit``
costs nothing: `audit --help` must not wait for numpy, let alone weasyprint.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

from audit.errors import AuditError, InputError

__version__ = "0.1.0"
DEFAULT_ALPHA = 0.01  # significance level of a verdict unless the user sets one

_LAZY = {
    "Checkpoint": "audit.checkpoint",
    "open_checkpoint": "audit.checkpoint",
    "RoleMap": "audit.roles",
    "assign_roles": "audit.roles",
}

if TYPE_CHECKING:
    from audit.checkpoint import Checkpoint, open_checkpoint
    from audit.roles import RoleMap, assign_roles


def __getattr__(name: str) -> object:
    if name in _LAZY:
        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'audit' has no attribute {name!r}")


__all__ = [
    "DEFAULT_ALPHA",
    "AuditError",
    "Checkpoint",
    "InputError",
    "RoleMap",
    "__version__",
    "assign_roles",
    "open_checkpoint",
]
