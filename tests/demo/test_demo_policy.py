"""policies/demo.yaml is what its generator writes, and its scene prompts cover the world."""

from __future__ import annotations

import yaml

from clipmod.demo import world, write_policy
from clipmod.demo.evaluate import DEFAULT_POLICY
from clipmod.policy.loader import load_policy_file


def test_committed_policy_is_the_generators_output() -> None:
    committed = yaml.safe_load(DEFAULT_POLICY.read_text())
    thresholds = {
        c["id"]: {"review_at": c["review_at"], "block_at": c["block_at"]}
        for c in committed["categories"]
    }
    assert committed == write_policy.build(thresholds), (
        "policies/demo.yaml drifted from clipmod.demo.write_policy: rerun it"
    )
    load_policy_file(DEFAULT_POLICY)  # and the schema accepts it


def test_every_scene_is_in_exactly_one_side_of_each_category() -> None:
    n = len(world.OBJECTS)
    for cid, own in world.VIOLATIONS.items():
        prompts, negatives = write_policy.scenes_for(cid)
        assert len(prompts) + len(negatives) == n + n * (n - 1) // 2
        assert len(set(prompts + negatives)) == len(prompts + negatives)
        for p in prompts:
            assert any(f"a photo of {world.article(o)}" in p for o in own), p
        for p in negatives:
            assert not any(f" {o}" in p for o in own), p


def test_a_scene_with_two_violations_is_a_prompt_of_both_categories_in_different_words() -> None:
    weapons, _ = write_policy.scenes_for("weapons")
    drugs, _ = write_policy.scenes_for("drugs")
    assert "a photo of a knife and a pill" in weapons
    assert "a photo of a pill and a knife" in drugs
    assert not set(weapons) & set(drugs)
