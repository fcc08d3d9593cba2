"""The policy schema: what a policy YAML file may say.

Unknown keys are errors (`extra="forbid"`): a misspelt `block_at` silently ignored would leave a
category unenforced, which is the worst failure a moderation policy can have.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

ID_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
BANK_NAME_PATTERN = r"^[a-z0-9][a-z0-9_-]{0,63}$"
MAX_PROMPT_CHARS = 300
# Every prompt goes through the text encoder whenever a version is loaded, linted or backtested
# (~40 ms each for ViT-B/32 on a CPU), and a list this long is a paste accident, not an
# ensemble: the limits keep one policy from stalling every worker that loads it.
MAX_PROMPTS = 256  # per list (prompts, negatives) of one category
MAX_CATEGORIES = 64


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Prompt(_Strict):
    """One prompt of an ensemble. `weight` scales its cosine (similarity) or prior (contrast)."""

    text: str = Field(min_length=1, max_length=MAX_PROMPT_CHARS)
    weight: float = Field(default=1.0, gt=0.0, le=10.0)

    @field_validator("text")
    @classmethod
    def _not_blank(cls, value: str) -> str:
        if not value.strip():
            raise ValueError("must not be blank")
        return value.strip()


class Thresholds(_Strict):
    review_at: float = Field(ge=-1.0, le=1.0)
    block_at: float = Field(ge=-1.0, le=1.0)

    @model_validator(mode="after")
    def _ordered(self) -> Self:
        if self.block_at < self.review_at:
            raise ValueError("block_at: must be ≥ review_at")
        return self


class Category(Thresholds):
    id: str = Field(pattern=ID_PATTERN)
    title: str = ""
    description: str = ""
    mode: Literal["similarity", "contrast"] = "similarity"
    prompts: list[Prompt] = Field(min_length=1, max_length=MAX_PROMPTS)
    negatives: list[Prompt] = Field(default_factory=list, max_length=MAX_PROMPTS)
    # A special category only escalates (lowers the others' thresholds when it reaches
    # review_at); it never reviews or blocks by itself.
    special: bool = False

    @field_validator("prompts", "negatives", mode="before")
    @classmethod
    def _strings_are_prompts(cls, value: object) -> object:
        if isinstance(value, list):
            return [{"text": v} if isinstance(v, str) else v for v in value]
        return value


class Escalation(_Strict):
    """When a `special` category reaches its review threshold, the others' thresholds drop."""

    lower_by: float = Field(default=0.0, ge=0.0, le=1.0)


class TenantOverride(_Strict):
    thresholds: dict[str, Thresholds] = Field(default_factory=dict)


class BankRef(_Strict):
    """A bank the policy matches against (see `clipmod.policy.banks`).

    `threshold` is a cosine between L2-normalised embeddings, hence within [-1, 1]; what a match
    does comes from the bank's kind. Without `version` the newest version applies, so adding a
    known-bad image takes effect without publishing the policy again; the verdict records the
    exact `bank@version` it matched.
    """

    name: str = Field(pattern=BANK_NAME_PATTERN)
    threshold: float = Field(ge=-1.0, le=1.0, allow_inf_nan=False)
    version: int | None = Field(default=None, ge=1)


class Policy(_Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$")
    description: str = ""
    model: str = ""
    categories: list[Category] = Field(min_length=1, max_length=MAX_CATEGORIES)
    escalation: Escalation = Field(default_factory=Escalation)
    audit_sample_rate: float = Field(default=0.0, ge=0.0, le=1.0)
    tenant_overrides: dict[str, TenantOverride] = Field(default_factory=dict)
    banks: list[BankRef] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_ids_and_known_overrides(self) -> Self:
        seen: set[str] = set()
        for cat in self.categories:
            if cat.id in seen:
                raise ValueError(f"categories: duplicate id {cat.id!r}")
            seen.add(cat.id)
        for tenant, override in self.tenant_overrides.items():
            unknown = sorted(set(override.thresholds) - seen)
            if unknown:
                raise ValueError(
                    f"tenant_overrides.{tenant}: unknown categories {', '.join(unknown)}"
                )
        names = [b.name for b in self.banks]
        for name in sorted({n for n in names if names.count(n) > 1}):
            raise ValueError(f"banks: bank {name!r} is listed twice")
        return self

    def category(self, category_id: str) -> Category:
        for cat in self.categories:
            if cat.id == category_id:
                return cat
        raise KeyError(category_id)
