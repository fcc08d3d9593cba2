"""Each lint check, its position in the file, and the exit status convention."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from sqlalchemy.orm import Session, sessionmaker

from cli.main import main
from clipmod import keys
from clipmod.db import transaction
from clipmod.policy import lint, parse_policy, rescore, scoring, traffic
from tests.policy.conftest import StoreFn, policy_text, unit_rows


def codes(findings: list[lint.Finding]) -> list[tuple[str, str, str]]:
    return [(f.severity, f.code, f.field) for f in findings]


def test_a_clean_policy_has_no_structural_findings() -> None:
    assert lint.lint(parse_policy(policy_text())) == []


def test_structure_checks_with_positions() -> None:
    text = """\
name: t
escalation: {lower_by: 0.1}
categories:
  - id: weapons
    mode: contrast
    prompts: [a photo of a knife, A photo of  a knife]
    review_at: 0.0
    block_at: 0.8
  - id: drugs
    prompts: [a photo of a pill, a photo of a knife]
    negatives: [a photo of a pill]
    review_at: 0.3
    block_at: 0.9
"""
    found = lint.lint(parse_policy(text), yaml_text=text, source="p.yaml")
    assert [str(f) for f in found] == [
        "p.yaml:4:5 categories[0].negatives: error [contrast_without_negatives] a contrast "
        "category needs negatives: with none, its score is always 1.0 and it blocks everything",
        "p.yaml:6:35 categories[0].prompts[1]: error [duplicate_prompt] same text as "
        "prompts[0] ('A photo of  a knife')",
        "p.yaml:7:16 categories[0].review_at: error [threshold_flags_everything] 0.0 ≤ 0, and "
        "a contrast score (a probability) is never below 0",
        "p.yaml:10:34 categories[1].prompts[1]: error [shared_prompt] 'a photo of a knife' is "
        "also a prompt of category 'weapons': both would fire on the same content",
        "p.yaml:11:17 categories[1].negatives[0]: error [prompt_is_negative] 'a photo of a "
        "pill' is both a prompt and a negative of this category",
        "p.yaml:2:24 escalation.lower_by: warning [escalation_unused] no category is "
        "`special`, so escalation never applies",
    ]
    assert lint.exit_status(found) == 2


def test_special_without_escalation_and_override_bounds() -> None:
    text = policy_text(
        extra="tenant_overrides:\n  acme:\n    thresholds:\n"
        "      weapons: {review_at: -0.1, block_at: 0.5}\n"
    ).replace("  - id: drugs\n", "  - id: drugs\n    special: true\n")
    found = lint.lint(parse_policy(text))
    assert codes(found) == [
        (
            "error",
            "threshold_flags_everything",
            "tenant_overrides.acme.thresholds.weapons.review_at",
        ),
        ("warning", "special_without_escalation", "escalation.lower_by"),
    ]


def test_model_mismatch(runtime: Any) -> None:
    policy = parse_policy(policy_text(model="openai/clip-vit-large-patch14"))
    found = lint.lint(policy, model_name="/models/clipmod-demo-clip")
    assert codes(found) == [("error", "model_mismatch", "model")]
    assert found[0].message == (
        "written for 'openai/clip-vit-large-patch14', but the workers run 'clipmod-demo-clip' "
        "(/models/clipmod-demo-clip): its thresholds do not carry over"
    )
    assert codes(lint.lint(policy, runtime=runtime))[:1] == [("error", "model_mismatch", "model")]
    ok = parse_policy(policy_text(model=runtime.display_name))
    assert lint.lint(ok, model_name=runtime.name) == []
    assert lint.lint(parse_policy(policy_text(model="clipmod-demo-clip")), model_name="x/y") != []
    assert lint.lint(parse_policy(policy_text())) == []  # no model named: nothing to compare


def test_model_id_from_a_bundled_folder(tmp_path: Path) -> None:
    (tmp_path / "training.json").write_text(json.dumps({"model_id": "clipmod-demo-clip"}))
    policy = parse_policy(policy_text(model="clipmod-demo-clip"))
    assert lint.lint(policy, model_name=str(tmp_path)) == []


class Tokens:
    """The real runtime, except that one text tokenises to nothing (no real input does)."""

    def __init__(self, runtime: Any, empty: str):
        self.runtime, self.empty = runtime, empty

    def __getattr__(self, name: str) -> Any:
        return getattr(self.runtime, name)

    def text_windows(self, text: str) -> list[list[int]]:
        windows: list[list[int]] = self.runtime.text_windows(text)
        return [windows[0][:1] + windows[0][-1:]] if text == self.empty else windows


def test_token_checks(runtime: Any) -> None:
    long = " ".join(["a"] * 120)  # 120 tokens in any CLIP tokenizer: one per word
    text = policy_text().replace("a photo of a syringe", long).replace("a photo of a gun", "zz")
    found = lint.lint(parse_policy(text), runtime=Tokens(runtime, "zz"), near_duplicate=1.01)
    assert codes(found) == [
        ("error", "prompt_no_tokens", "categories[0].prompts[1]"),
        ("warning", "prompt_truncated", "categories[1].prompts[1]"),
    ]
    assert found[1].message == "120 tokens; the model reads only the first 75 of a prompt"


def expected_near_pairs(policy: Any, runtime: Any, limit: float) -> list[tuple[str, str]]:
    """Brute force over every pair of prompts (negatives are not compared)."""
    rows = [
        (f"categories[{i}].prompts[{j}]", p.text)
        for i, c in enumerate(policy.categories)
        for j, p in enumerate(c.prompts)
    ]
    emb = scoring.l2_normalise(runtime.encode_texts([text for _, text in rows]))
    return sorted(
        ("near_duplicate_prompt", rows[b][0])
        for a in range(len(rows))
        for b in range(a + 1, len(rows))
        if float(emb[a] @ emb[b]) >= limit and rows[a][1].lower() != rows[b][1].lower()
    )


def test_near_duplicates_by_cosine_under_the_model(runtime: Any) -> None:
    """Expectations come from the model at hand, so this holds for trained and random weights."""
    policy = parse_policy(policy_text().replace("a photo of a gun", "a photo of a knife."))
    found = lint.lint(policy, runtime=runtime)
    assert [(f.code, f.field) for f in found] == expected_near_pairs(policy, runtime, 0.95)
    # The trailing full stop changes the text, hardly the meaning, under any CLIP.
    assert ("warning", "near_duplicate_prompt", "categories[0].prompts[1]") in codes(found)
    knife = next(f for f in found if f.field == "categories[0].prompts[1]")
    assert knife.message.startswith("'a photo of a knife.' is ")
    assert knife.message.endswith(
        "cosine to 'a photo of a knife' (categories[0].prompts[0]) in the same category"
    )
    every = lint.lint(policy, runtime=runtime, near_duplicate=-1.0)
    assert [(f.code, f.field) for f in every] == expected_near_pairs(policy, runtime, -1.0)
    assert len(every) == 6  # every pair of the 4 prompts: 1 + 1 within, 2 x 2 across
    across = [f for f in every if f.field == "categories[1].prompts[0]"]
    fires = "of category 'weapons': both would fire on the same content"
    assert [f.message.split(" cosine to ")[1] for f in across] == [
        f"'a photo of a knife' (categories[0].prompts[0]) {fires}",
        f"'a photo of a knife.' (categories[0].prompts[1]) {fires}",
    ]


def test_thresholds_against_stored_traffic(
    store: StoreFn, runtime: Any, sessions: sessionmaker[Session]
) -> None:
    rng = np.random.default_rng(1)
    for _ in range(25):
        store("acme", image=unit_rows(rng, 1, runtime.dim)[0])
    probe = parse_policy(policy_text())
    with sessions() as session:
        emb = traffic.load_embeddings(session, runtime.revision)
        scores = rescore.item_scores(rescore.BankCache().get(probe, runtime), emb)
    (w_lo, d_lo), (_, d_hi) = scores.min(axis=0), scores.max(axis=0)
    above = round(float(d_hi) + 0.01, 3)
    below = round(float(w_lo) - 0.001, 4)
    text = policy_text(weapons=(below, below), drugs=(above, min(above + 0.05, 1.0)))
    with sessions() as session:
        found = lint.lint(parse_policy(text), runtime=runtime, session=session, near_duplicate=2)
        few = lint.lint(
            parse_policy(text), runtime=runtime, session=session, near_duplicate=2, min_traffic=26
        )
    assert codes(found) == [
        ("warning", "blocks_all_traffic", "categories[0].block_at"),
        ("warning", "reviews_all_traffic", "categories[0].review_at"),
        ("warning", "never_flags", "categories[1].review_at"),
    ]
    assert found[2].message == (
        f"{above} is above all scores seen on 25 stored items: {d_lo:.3f} to {d_hi:.3f}"
    )
    assert few == []  # too little traffic to judge a threshold


def test_unknown_tenant(sessions: sessionmaker[Session]) -> None:
    with transaction(sessions) as session:
        keys.get_or_create_tenant(session, "acme")
    extra = "tenant_overrides:\n  acme: {}\n  acne: {}\n"
    with sessions() as session:
        found = lint.lint(parse_policy(policy_text(extra=extra)), session=session)
    assert codes(found) == [("warning", "unknown_tenant", "tenant_overrides.acne")]


def test_exit_status() -> None:
    warning = lint.Finding("warning", "w", "f", "m")
    error = lint.Finding("error", "e", "f", "m")
    assert lint.exit_status([]) == 0
    assert lint.exit_status([], strict=True) == 0
    assert lint.exit_status([warning]) == 0
    assert lint.exit_status([warning], strict=True) == 1
    assert lint.exit_status([warning, error]) == 2


def test_cli_lint_exit_codes_and_json(
    tmp_path: Path, runtime: Any, capsys: pytest.CaptureFixture[str], cli_env: None
) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(model=runtime.display_name), encoding="utf-8")
    assert main(["policy", "lint", str(path), "--no-model"]) == 0
    assert capsys.readouterr().err.endswith("0 errors, 0 warnings\n")
    path.write_text(policy_text(extra="escalation: {lower_by: 0.1}\n"), encoding="utf-8")
    assert main(["policy", "lint", str(path), "--no-model"]) == 0
    assert main(["policy", "lint", str(path), "--no-model", "--strict"]) == 1
    out = capsys.readouterr().out
    assert f"{path}:14:24 escalation.lower_by: warning [escalation_unused]" in out
    path.write_text(policy_text(model="some-other-model"), encoding="utf-8")
    assert main(["policy", "lint", str(path), "--json"]) == 2
    data = json.loads(capsys.readouterr().out)
    assert data["status"] == 2 and data["errors"] >= 1
    assert data["findings"][0] == {
        "severity": "error",
        "code": "model_mismatch",
        "field": "model",
        "message": data["findings"][0]["message"],
        "source": str(path),
        "line": 2,
        "column": 8,
    }
    path.write_text("name: [\n", encoding="utf-8")
    assert main(["policy", "lint", str(path)]) == 2
    assert capsys.readouterr().err.startswith(f"{path}:2:1 YAML syntax:")


def test_cli_lint_loads_the_configured_model(
    tmp_path: Path, settings: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """No stand-in: `clipmod policy lint` loads CLIPMOD_MODEL itself."""
    monkeypatch.setenv("CLIPMOD_DATA_DIR", str(settings.data_dir))
    monkeypatch.setenv("CLIPMOD_MODEL", settings.model)
    monkeypatch.setenv("CLIPMOD_DEVICE", "cpu")
    path = tmp_path / "p.yaml"
    path.write_text(policy_text(model="not-this-one"), encoding="utf-8")
    assert main(["policy", "lint", str(path)]) == 2
    assert "[model_mismatch] written for 'not-this-one', but" in capsys.readouterr().out
