"""Typed SQLAlchemy 2.0 tables, split by domain; import from here."""

from clipmod.actions import Action
from clipmod.models.base import Base, new_id, utcnow
from clipmod.models.drafts import PolicyDraft
from clipmod.models.items import Item, ItemEmbedding, ItemStatus, Verdict
from clipmod.models.policies import (
    ActivationMode,
    Decision,
    DecisionAction,
    PolicyActivation,
    PolicyVersion,
    ShadowVerdict,
)
from clipmod.models.review import AuditEvent, Claim, Role, User, user_tenants
from clipmod.models.tenancy import ApiKey, Tenant

__all__ = [
    "Action",
    "ActivationMode",
    "ApiKey",
    "AuditEvent",
    "Base",
    "Claim",
    "Decision",
    "DecisionAction",
    "Item",
    "ItemEmbedding",
    "ItemStatus",
    "PolicyActivation",
    "PolicyDraft",
    "PolicyVersion",
    "Role",
    "ShadowVerdict",
    "Tenant",
    "User",
    "Verdict",
    "new_id",
    "user_tenants",
    "utcnow",
]
