"""Typed SQLAlchemy 2.0 tables, split by domain; import from here."""

from clipmod.actions import Action
from clipmod.models.banks import Bank, BankEntry, BankVersion
from clipmod.models.base import Base, as_utc, new_id, utcnow
from clipmod.models.drafts import PolicyDraft
from clipmod.models.items import Item, ItemEmbedding, ItemStatus, Verdict
from clipmod.models.jobs import DashboardJob, JobStatus
from clipmod.models.platform import (
    Delivery,
    DeliveryAttempt,
    DeliveryStatus,
    SecretPurpose,
    SeenSignature,
    SigningSecret,
)
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
from clipmod.models.traffic import TrafficLog

__all__ = [
    "Action",
    "ActivationMode",
    "ApiKey",
    "AuditEvent",
    "Bank",
    "BankEntry",
    "BankVersion",
    "Base",
    "Claim",
    "DashboardJob",
    "Decision",
    "DecisionAction",
    "Delivery",
    "DeliveryAttempt",
    "DeliveryStatus",
    "Item",
    "ItemEmbedding",
    "ItemStatus",
    "JobStatus",
    "PolicyActivation",
    "PolicyDraft",
    "PolicyVersion",
    "Role",
    "SecretPurpose",
    "SeenSignature",
    "ShadowVerdict",
    "SigningSecret",
    "Tenant",
    "TrafficLog",
    "User",
    "Verdict",
    "as_utc",
    "new_id",
    "user_tenants",
    "utcnow",
]
