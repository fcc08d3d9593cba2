"""Typed SQLAlchemy 2.0 tables, split by domain; import from here."""

from clipmod.actions import Action
from clipmod.models.banks import Bank, BankEntry, BankVersion
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
from clipmod.models.traffic import TrafficLog

__all__ = [
    "Action",
    "ActivationMode",
    "ApiKey",
    "Bank",
    "BankEntry",
    "BankVersion",
    "Base",
    "Decision",
    "Item",
    "ItemEmbedding",
    "ItemStatus",
    "PolicyActivation",
    "PolicyVersion",
    "ShadowVerdict",
    "Tenant",
    "TrafficLog",
    "Verdict",
    "new_id",
    "utcnow",
]
