"""The retrain check's comparison (the retrain itself takes ~25 min: `make reproduce-demo`)."""

from __future__ import annotations

from clipmod.demo.reproduce import compare, flatten

RESULT = {
    "zero_shot_accuracy": 0.93,
    "categories": {"weapons": {"precision": 0.91, "recall": 0.88, "f1": 0.895}},
}


def test_flatten_names_every_number() -> None:
    assert flatten(RESULT) == {
        "zero_shot_accuracy": 0.93,
        "weapons.precision": 0.91,
        "weapons.recall": 0.88,
        "weapons.f1": 0.895,
    }


def test_compare_allows_the_tolerance_and_no_more() -> None:
    committed = flatten(RESULT)
    assert compare(committed, dict(committed), 0.02) == []
    nudged = {**committed, "weapons.recall": 0.90}
    assert compare(committed, nudged, 0.02) == []
    moved = {**committed, "weapons.recall": 0.85}
    assert compare(committed, moved, 0.02) == ["weapons.recall: committed 0.880, retrained 0.850"]


def test_compare_fails_a_missing_or_nan_metric() -> None:
    committed = flatten(RESULT)
    missing = {k: v for k, v in committed.items() if k != "weapons.f1"}
    assert len(compare(committed, missing, 0.02)) == 1
    assert len(compare(committed, {**committed, "weapons.f1": float("nan")}, 0.02)) == 1
