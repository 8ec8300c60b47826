"""Roles: which tensor is layer i's query projection, MLP up-projection, ...

:func:`assign_roles` detects the family (a user mapping, else config.json's
``architectures``/``model_type``, else the tensor names) and returns a
:class:`RoleMap` of canonical :class:`~audit.checkpoint.TensorView` objects.
"""

from audit.roles.map import Layer, RoleMap, assign_roles
from audit.roles.names import ATTENTION, EXPERT_MLP, EXPERT_ROLES, GLOBAL_ROLES, LAYER_ROLES, MLP
from audit.roles.spec import AttentionShape, FamilySpec

__all__ = [
    "ATTENTION",
    "EXPERT_MLP",
    "EXPERT_ROLES",
    "GLOBAL_ROLES",
    "LAYER_ROLES",
    "MLP",
    "AttentionShape",
    "FamilySpec",
    "Layer",
    "RoleMap",
    "assign_roles",
]
