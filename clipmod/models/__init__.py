"""Typed SQLAlchemy 2.0 tables, split by domain; import from here."""

from clipmod.actions import Action
from clipmod.models.base import Base, new_id, utcnow
from clipmod.models.items import Item, ItemEmbedding, ItemStatus, Verdict
from clipmod.models.policies import (
    ActivationMode,
    Decision,
    PolicyActivation,
    PolicyVersion,
    ShadowVerdict,
)
from clipmod.models.tenancy import ApiKey, Tenant

__all__ = [
    "Action",
    "ActivationMode",
    "ApiKey",
    "Base",
    "Decision",
    "Item",
    "ItemEmbedding",
    "ItemStatus",
    "PolicyActivation",
    "PolicyVersion",
    "ShadowVerdict",
    "Tenant",
    "Verdict",
    "new_id",
    "utcnow",
]
