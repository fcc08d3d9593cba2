"""Policies that reference banks: schema errors with positions, publish checks, lint findings."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from clipmod.banks import registry
from clipmod.banks.registry import NewEntry
from clipmod.db import transaction
from clipmod.policy import PolicyError, lint, parse_policy, versions
from tests.policy.conftest import StoreFn, policy_text, unit_rows


def with_banks(*refs: str) -> str:
    return policy_text() + "banks:\n" + "".join(f"  - {r}\n" for r in refs)


@pytest.mark.parametrize(
    ("ref", "message"),
    [
        (
            "{name: bad, threshold: 1.5}",
            "banks[0].threshold: Input should be less than or equal to 1",
        ),
        ("{name: bad, threshold: -1.01}", "banks[0].threshold: Input should be greater than or"),
        ("{name: bad, threshold: .nan}", "banks[0].threshold: Input should be a finite number"),
        ("{name: bad}", "banks[0].threshold: Field required"),
        ("{name: Bad Name, threshold: 0.9}", "banks[0].name: String should match pattern"),
        ("{name: bad, threshold: 0.9, version: 0}", "banks[0].version: Input should be greater"),
        ("{name: bad, threshold: 0.9, kind: block}", "banks[0].kind: unknown key"),
    ],
)
def test_bank_references_are_validated_with_positions(ref: str, message: str) -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(with_banks(ref), source="p.yaml")
    line = with_banks(ref).splitlines().index(f"  - {ref}") + 1
    assert str(err.value).startswith(f"p.yaml:{line}:")
    assert message in str(err.value)


def test_a_bank_listed_twice_is_an_error() -> None:
    with pytest.raises(PolicyError) as err:
        parse_policy(with_banks("{name: a, threshold: 0.9}", "{name: a, threshold: 0.8}"))
    assert "banks: bank 'a' is listed twice" in str(err.value)


def test_publishing_a_policy_with_an_unknown_bank_is_refused_at_its_line(
    sessions: sessionmaker[Session],
) -> None:
    text = with_banks("{name: nope, threshold: 0.9}")
    with pytest.raises(PolicyError) as err, transaction(sessions) as session:
        versions.publish(session, text, author="t", source="p.yaml")
    line = text.splitlines().index("  - {name: nope, threshold: 0.9}") + 1
    assert str(err.value) == (
        f"p.yaml:{line}:12 banks[0].name: no bank named 'nope': create it first "
        "(`clipmod banks create`)"
    )


def make_bank(
    sessions: sessionmaker[Session], runtime: Any, name: str, kind: str, rows: np.ndarray | None
) -> None:
    with transaction(sessions) as session:
        bank = registry.create_bank(
            session, name, kind, model_revision=runtime.revision, dim=runtime.dim, author="t"
        )
        if rows is not None:
            new = [
                NewEntry(r, runtime.revision, "upload", image_sha256=f"{name}{k}")
                for k, r in enumerate(rows)
            ]
            registry.add_entries(session, bank, new, author="t")


def codes(findings: list[lint.Finding]) -> dict[str, lint.Finding]:
    """Bank findings by code (the first of each)."""
    out: dict[str, lint.Finding] = {}
    for f in findings:
        if f.code.startswith("bank_"):
            out.setdefault(f.code, f)
    return out


def test_lint_finds_conflicts_runaway_matches_and_references_workers_cannot_honour(
    sessions: sessionmaker[Session], runtime: Any, store: StoreFn
) -> None:
    rng = np.random.default_rng(2)
    shared = unit_rows(rng, 1, runtime.dim)
    block_rows = np.concatenate([shared, unit_rows(rng, 3, runtime.dim)])
    allow_rows = np.concatenate([shared * 0.999 + 0.001, unit_rows(rng, 2, runtime.dim)])
    make_bank(sessions, runtime, "bad", "block", block_rows)
    make_bank(sessions, runtime, "logos", "allow", allow_rows)
    make_bank(sessions, runtime, "empty", "review", None)
    with transaction(sessions) as session:
        registry.create_bank(session, "old", "block", model_revision="0ld", dim=4, author="t")
    for _ in range(30):  # stored traffic: every item near the block bank's first entry
        store("acme", image=(shared[0] + 0.05 * rng.standard_normal(runtime.dim)))
    text = with_banks(
        "{name: bad, threshold: 0.8}",
        "{name: logos, threshold: 0.9}",
        "{name: empty, threshold: 0.9}",
        "{name: old, threshold: 0.9}",
        "{name: gone, threshold: 0.9}",
    )
    policy = parse_policy(text)
    with sessions() as session:
        found = codes(
            lint.lint(policy, runtime=runtime, session=session, yaml_text=text, source="p.yaml")
        )
    assert set(found) == {
        "bank_entries_conflict",
        "bank_matches_much_traffic",
        "bank_empty",
        "bank_model_mismatch",
        "bank_not_found",
    }
    conflict = found["bank_entries_conflict"]
    assert conflict.severity == "warning" and conflict.field == "banks[0].name"
    assert "1 pair(s) of bad@1 (block) and logos@1 (allow) entries are closer than 0.8" in (
        conflict.message
    )
    assert found["bank_matches_much_traffic"].field == "banks[0].threshold"
    assert "matches 100.0% of 30 stored items" in found["bank_matches_much_traffic"].message
    assert found["bank_model_mismatch"].severity == "error"
    assert "0ld" in found["bank_model_mismatch"].message
    assert (
        found["bank_not_found"].line
        == text.splitlines().index("  - {name: gone, threshold: 0.9}") + 1
    )
    assert found["bank_empty"].message == "empty@0 has no entries"
    assert lint.exit_status(list(found.values())) == 2


def test_a_pinned_version_that_does_not_exist_is_an_error(
    sessions: sessionmaker[Session], runtime: Any
) -> None:
    make_bank(
        sessions, runtime, "bad", "block", unit_rows(np.random.default_rng(0), 2, runtime.dim)
    )
    policy = parse_policy(with_banks("{name: bad, threshold: 0.9, version: 3}"))
    with sessions() as session:
        found = codes(lint.lint(policy, runtime=runtime, session=session))
    assert found["bank_version_not_found"].field == "banks[0].version"
    assert found["bank_version_not_found"].message == "bank 'bad' has no version 3 (newest: 1)"
