"""Every class of schema error names file:line:column and the field, from the message alone."""

from __future__ import annotations

from pathlib import Path

import pytest

from clipmod.policy import PolicyError, load_policy_file, parse_policy

GOOD = """\
name: t
model: m
categories:
  - id: weapons
    prompts: [a photo of a knife]
    review_at: 0.5
    block_at: 0.8
  - id: drugs
    mode: contrast
    prompts:
      - a photo of a pill
    negatives: [a photo of a cup]
    review_at: 0.5
    block_at: 0.8
"""
FIRST_THRESHOLDS = "    review_at: 0.5\n    block_at: 0.8\n  - id: drugs"


def problems(text: str) -> list[str]:
    with pytest.raises(PolicyError) as caught:
        parse_policy(text, source="p.yaml")
    return [str(p) for p in caught.value.problems]


def test_the_base_policy_is_valid() -> None:
    assert [c.id for c in parse_policy(GOOD).categories] == ["weapons", "drugs"]


def test_unknown_key_points_at_the_key() -> None:
    text = GOOD.replace(
        "    block_at: 0.8\n  - id: drugs", "    block_at: 0.8\n    blok_at: 1\n  - id: drugs"
    )
    assert problems(text) == ["p.yaml:8:5 categories[0].blok_at: unknown key"]


def test_block_below_review_points_at_block_at() -> None:
    text = GOOD.replace(FIRST_THRESHOLDS, "    review_at: 0.9\n    block_at: 0.8\n  - id: drugs")
    assert problems(text) == ["p.yaml:7:15 categories[0].block_at: must be ≥ review_at"]


def test_duplicate_category_id() -> None:
    # The loader points at the categories list (its first entry), and names the id.
    assert problems(GOOD.replace("id: drugs", "id: weapons")) == [
        "p.yaml:4:3 categories: duplicate id 'weapons'"
    ]


def test_bad_yaml_syntax_points_where_the_parser_stopped() -> None:
    text = GOOD.replace("prompts: [a photo of a knife]", "prompts: [a photo of a knife")
    assert problems(text) == ["p.yaml:6:14 YAML syntax: expected ',' or ']', but got ':'"]


def test_wrong_type_points_at_the_value() -> None:
    text = GOOD.replace(FIRST_THRESHOLDS, "    review_at: lots\n    block_at: 0.8\n  - id: drugs")
    assert problems(text) == [
        "p.yaml:6:16 categories[0].review_at: Input should be a valid number, "
        "unable to parse string as a number"
    ]


def test_missing_field_points_at_its_mapping() -> None:
    text = GOOD.replace(FIRST_THRESHOLDS, "    block_at: 0.8\n  - id: drugs")
    assert problems(text) == ["p.yaml:4:5 categories[0].review_at: Field required"]


def test_several_problems_are_all_reported() -> None:
    text = GOOD.replace("model: m", "model: m\nfoo: 1").replace("mode: contrast", "mode: cosine")
    found = problems(text)
    assert sorted(found) == [
        "p.yaml:10:11 categories[1].mode: Input should be 'similarity' or 'contrast'",
        "p.yaml:3:1 foo: unknown key",
    ]


def test_tenant_override_errors_are_positioned() -> None:
    override = "      drugs: {review_at: 0.3, block_at: 0.2}\n"
    text = GOOD + "tenant_overrides:\n  acme:\n    thresholds:\n" + override
    assert problems(text) == [
        "p.yaml:18:41 tenant_overrides.acme.thresholds.drugs.block_at: must be ≥ review_at"
    ]


def test_a_file_names_its_path(tmp_path: Path) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(GOOD.replace("id: drugs", "id: Drugs!"), encoding="utf-8")
    with pytest.raises(PolicyError) as caught:
        load_policy_file(path)
    (problem,) = caught.value.problems
    assert (problem.source, problem.line, problem.column, problem.field) == (
        str(path),
        8,
        9,
        "categories[1].id",
    )
    body = caught.value.to_dict()["error"]
    assert body["code"] == "invalid_policy"
    assert body["problems"][0]["line"] == 8


def test_characters_yaml_refuses_to_read_are_a_problem_not_a_crash() -> None:
    """Found by the OpenAPI contract test: a control character made `POST /v1/policies` 500."""
    (problem,) = problems("name: t\x11\n")
    assert problem.startswith("p.yaml:1:1") and "YAML" in problem
