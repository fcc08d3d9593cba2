"""Policy schema, parsing with positioned errors, and versions."""

from clipmod.policy.loader import PolicyError, Problem, content_hash, load_policy_file, parse_policy
from clipmod.policy.schema import Category, Policy, Prompt

__all__ = [
    "Category",
    "Policy",
    "PolicyError",
    "Problem",
    "Prompt",
    "content_hash",
    "load_policy_file",
    "parse_policy",
]
