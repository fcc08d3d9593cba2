"""The `/v1` request and response shapes as pydantic models: the source of `/v1/openapi.json`.

Request models are the ones the handlers validate with (intake's `UploadFields`, the policy
bodies, the platform bodies below); response models describe what the handlers return, and
the Schemathesis test holds the live app to them, so the document cannot drift from the code.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from clipmod.keys import SCOPES

Scope = Literal[SCOPES]  # type: ignore[valid-type]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class _Out(BaseModel):
    # Responses may grow fields; clients must ignore the ones they do not know.
    model_config = ConfigDict(extra="allow")


# -- errors ------------------------------------------------------------------------------------


class ErrorDetail(_Out):
    code: str = Field(description="Stable machine-readable code; branch on this, not `message`.")
    message: str = Field(description="Human-readable explanation; may change.")


class Error(_Out):
    error: ErrorDetail


# -- items -------------------------------------------------------------------------------------


class Links(_Out):
    self: str = Field(description="This resource's path.")


class ItemAccepted(_Out):
    id: str = Field(description="The item's id.")
    external_id: str | None = Field(description="The platform's own id for the item, if sent.")
    status: Literal["queued"]
    links: Links


class PolicyRef(_Out):
    name: str
    version: int


class ModelRef(_Out):
    name: str
    revision: str


class CategoryScore(_Out):
    id: str = Field(description="The policy category.")
    score: float = Field(description="CLIP score under the category's mode.")
    review_at: float = Field(description="Effective review threshold (after escalation).")
    block_at: float = Field(description="Effective block threshold (after escalation).")
    action: Literal["allow", "review", "block"]
    top_prompt: str = Field(description="The prompt that scored highest.")
    source: str = Field(description="Which input scored highest: image or text.")


class VerdictOut(_Out):
    action: Literal["allow", "review", "block"] = Field(description="The item's action.")
    audit: bool = Field(description="An allowed item sampled for human review anyway.")
    policy: PolicyRef
    model: ModelRef
    categories: list[CategoryScore]
    scored_at: str


class InputKinds(_Out):
    text: bool = Field(description="The item had text.")
    image: bool = Field(description="The item had uploaded image bytes.")
    url: bool = Field(description="The item named its image by `image_url`.")


class ItemOut(_Out):
    id: str
    external_id: str | None
    status: Literal["queued", "processing", "scored", "failed"]
    created_at: str
    metadata: Any = Field(description="The metadata sent with the item, echoed.")
    input: InputKinds
    verdict: VerdictOut | None = Field(description="Null until scored.")
    error: ErrorDetail | None = Field(description="Why the item failed, when `status` is failed.")
    links: Links
    text: str | None = Field(
        default=None, description="The item's text; only in GET of one item (its owner's)."
    )
    image_url: str | None = Field(default=None, description="Only in GET of one item.")


class ItemPage(_Out):
    items: list[ItemOut]
    next_cursor: str | None = Field(description="Pass as `cursor` for the next page.")


class MultipartItem(BaseModel):
    """`POST /v1/items` as multipart/form-data (the JSON form is `UploadFields`)."""

    file: bytes | None = Field(default=None, description="The image, as a file part.")
    text: str | None = Field(default=None, description="Text to score.")
    external_id: str | None = Field(default=None, description="Idempotency key.")
    metadata: str | None = Field(default=None, description="A JSON object, as a string.")
    image_url: str | None = Field(default=None, description="An http(s) URL of the image.")


# -- deliveries --------------------------------------------------------------------------------


class DeliveryAttemptOut(_Out):
    number: int
    attempted_at: str
    status_code: int | None = Field(description="The receiver's HTTP status, if it answered.")
    error: str | None
    duration_ms: int


class DeliveryOut(_Out):
    id: str = Field(description="Also sent as `Clipmod-Delivery`: deduplicate on it.")
    event: Literal["item.scored", "item.failed"]
    item_id: str | None
    url: str
    status: Literal["pending", "succeeded", "dead"]
    attempts: int
    last_status_code: int | None
    last_error: str | None
    next_attempt_at: str | None
    created_at: str
    delivered_at: str | None
    attempt_log: list[DeliveryAttemptOut] | None = None


class DeliveryPage(_Out):
    deliveries: list[DeliveryOut]
    next_cursor: str | None


# -- keys and tenants --------------------------------------------------------------------------


class KeyOut(_Out):
    prefix: str = Field(description="Public part of the key: names it in lists and logs.")
    tenant: str
    label: str
    admin: bool
    scopes: list[str]
    created_at: str
    revoked_at: str | None
    active: bool


class KeyCreated(KeyOut):
    key: str = Field(description="The whole key. Shown this once; store it now.")


class KeyList(_Out):
    keys: list[KeyOut]


class KeyCreate(_Strict):
    tenant: str = Field(min_length=1, max_length=64, description="Created if new.")
    label: str = Field(default="", max_length=128)
    admin: bool = Field(default=False, description="May manage policies, keys and tenants.")
    scopes: list[Scope] | None = Field(default=None, description="Default: every scope.")


class KeyRotate(_Strict):
    grace_s: float = Field(
        default=0, ge=0, le=30 * 86400, description="Seconds the old key keeps working."
    )


class SecretOut(_Out):
    id: str
    purpose: Literal["webhook", "callback"]
    hint: str = Field(description="The secret's first characters, to recognise it.")
    created_at: str
    expires_at: str | None
    active: bool


class SecretCreated(SecretOut):
    secret: str = Field(description="The signing secret. Shown this once.")


class SecretCreate(_Strict):
    purpose: Literal["webhook", "callback"]
    rotate: bool = Field(default=False, description="End the older active secrets after `grace_s`.")
    grace_s: float = Field(default=86400, ge=0, le=30 * 86400)


class TenantOut(_Out):
    name: str
    callback_url: str | None
    rate_limit: str | None = Field(description="Null: the service's default.")
    signing_secrets: list[SecretOut]
    new_callback_secret: SecretCreated | None = Field(
        default=None, description="Set when a callback URL was set and no secret existed."
    )


class CallbackUpdate(_Strict):
    url: str | None = Field(max_length=2048, description="Null turns callbacks off.")


class TenantPatch(_Strict):
    rate_limit: str | None = Field(
        default=None, max_length=128, description='e.g. "100/minute;2000/hour"; "" resets.'
    )
    callback_url: str | None = Field(default=None, max_length=2048, description='"" clears.')


class PolicyVersionOut(_Out):
    id: int
    name: str
    version: int
    label: str
    content_hash: str
    author: str
    parent_id: int | None
    created_at: str
    in_force: list[dict[str, Any]]


def upload_descriptions() -> dict[str, str]:
    """Descriptions for intake's `UploadFields`, which stays free of documentation noise."""
    return {
        "text": "Text to score (whitespace-only counts as none).",
        "external_id": "The platform's id: the idempotency key for retries.",
        "metadata": "Any JSON object up to 16 KiB; echoed back, never scored.",
        "image_base64": "The image as standard base64 (a data: URI prefix is accepted).",
        "image_url": "An http(s) URL the worker fetches (SSRF rules apply).",
    }


class PublishOut(_Out):
    version: PolicyVersionOut
    created: bool
    activated: dict[str, Any] | None


class ActivateOut(_Out):
    version: PolicyVersionOut
    activated: dict[str, Any]


class StopShadowOut(_Out):
    stopped: list[str] = Field(description="The shadow versions that stopped running, by label.")
    tenants: list[str] | None = Field(description="The scope: these tenants, or null: everyone.")


class VersionList(_Out):
    versions: list[PolicyVersionOut]


class PolicyVersionText(PolicyVersionOut):
    yaml: str


class LintOut(_Out):
    findings: list[dict[str, Any]]
    errors: int
    warnings: int
    status: int


class Report(_Out):
    """A backtest report (see README "Policies"); its fields follow the report's version."""


class Health(_Out):
    status: str


# -- decisions ---------------------------------------------------------------------------------


class DecisionAnswered(_Out):
    verdict_action: str | None = Field(description="The verdict's action the decision answered.")
    policy_version_id: int | None


class DecisionOut(_Out):
    id: int
    action: str = Field(description="allow, remove or escalate")
    labels: dict[str, bool] = Field(description="Per category: was it a violation?")
    reason: str | None
    moderator: str = Field(description="`api:<tenant>:<who>` for decisions sent over the API")
    source: str = Field(description="api, dashboard or legacy")
    decided_at: str
    answered: DecisionAnswered
    supersedes: int | None = Field(description="The decision this one replaced, if any.")


class DecisionList(_Out):
    decisions: list[DecisionOut] = Field(description="Oldest first; the last one is in force.")
