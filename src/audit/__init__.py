"""Statistical audit of model provenance.

Data flows one way: files -> checkpoint -> roles -> fingerprints -> tests ->
evidence -> report -> signature.  This package exposes each layer as a module;
the command line (:mod:`audit.cli`) is a thin wrapper over the same API.
"""

from audit.checkpoint import Checkpoint, open_checkpoint
from audit.errors import AuditError, InputError
from audit.roles import RoleMap, assign_roles

__version__ = "0.1.0"
DEFAULT_ALPHA = 0.01  # significance level of a verdict unless the user sets one

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
