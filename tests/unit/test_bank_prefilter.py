"""The int8 bank prefilter: the bound it rests on, and the same answers as the float32 product.

Pure numpy and torch on the CPU. The adversarial cases put entries closer to each other and to
the thresholds (1e-5 apart) than int8 codes can tell apart (~5e-3), and check first that the
codes alone do get them wrong, so the re-check is what the equality tests exercise.
"""

from __future__ import annotations

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from clipmod.actions import Action
from clipmod.banks import prefilter
from clipmod.policy import parse_policy, scoring
from clipmod.policy.banks import BankScores, BankSet, BankSnapshot, stack

DIM = 128
POLICY = """\
name: t
categories:
  - id: weapons
    prompts: [knife]
    review_at: 0.5
    block_at: 0.9
"""


def units(rng: np.random.Generator, n: int) -> np.ndarray:
    x = rng.normal(size=(n, DIM))
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def at_cosine(x: np.ndarray, cosine: float, rng: np.random.Generator) -> np.ndarray:
    """A unit vector whose cosine to the unit vector x is `cosine`."""
    u = rng.normal(size=DIM)
    u -= (u @ x) * x
    u /= np.linalg.norm(u)
    return (cosine * x + np.sqrt(1 - cosine**2) * u).astype(np.float32)


def snap(name: str, kind: Action, rows: np.ndarray) -> BankSnapshot:
    ids = np.arange(1000, 1000 + len(rows), dtype=np.int64)
    return BankSnapshot(name, 1, kind, "rev", ids, rows.reshape(-1, DIM).astype(np.float32))


def both(pairs: list[tuple[BankSnapshot, float]]) -> tuple[BankSet, BankSet]:
    """The plain float32 set and the same set with the prefilter."""
    plain, coded = stack(pairs), stack(pairs, prefilter_at=0)
    assert plain.prefilter is None and coded.prefilter is not None
    return plain, coded


def assert_same(a: BankScores, b: BankScores) -> None:
    np.testing.assert_array_equal(a.entry, b.entry)
    np.testing.assert_allclose(a.similarity, b.similarity, atol=1e-6, rtol=0)


def adversarial(rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[BankSnapshot, float]]]:
    """Rows with entries 1e-5 around each bank's threshold and around each other, hidden among
    random entries, in banks whose sizes are not whole blocks (and one empty bank)."""
    rows = units(rng, 24)
    sizes, thresholds = (3_001, 0, 130, 2_000), (0.9, 0.5, 0.8, 0.95)
    banks = [units(rng, n) for n in sizes]
    offsets = (-3e-5, -1e-5, 1e-5, 2e-5, 3e-5)
    for i, x in enumerate(rows):
        b = (0, 2, 3)[i % 3]
        for off in offsets:
            banks[b][rng.integers(len(banks[b]))] = at_cosine(x, thresholds[b] + off, rng)
    kinds = (Action.BLOCK, Action.BLOCK, Action.ALLOW, Action.REVIEW)
    pairs = [(snap(f"b{k}", kinds[k], banks[k]), thresholds[k]) for k in range(len(sizes))]
    return rows, pairs


def test_every_entry_is_within_the_bound_of_its_float32_cosine() -> None:
    """The inequality the prefilter rests on, entry by entry: random rows, and rows along the
    entries' own coding error (the direction Cauchy-Schwarz is tight in)."""
    rng = np.random.default_rng(0)
    entries = units(rng, 5_000)
    pairs = [
        (snap("a", Action.BLOCK, entries[:3_000]), 0.9),
        (snap("b", Action.BLOCK, entries[3_000:]), 0.9),
    ]
    bank_set = stack(pairs, prefilter_at=0)
    pf = bank_set.prefilter
    assert pf is not None
    q = np.rint(entries / pf.column_scale).astype(np.float64)
    errors = entries - q * pf.column_scale
    along = errors[:8] / np.linalg.norm(errors[:8], axis=1, keepdims=True)
    rows = np.concatenate([units(rng, 24), along.astype(np.float32)])
    product, scale, eps = prefilter.approximate(pf, rows)
    real = pf.source >= 0
    approx = scale[:, None] * product.numpy().T[:, real].astype(np.float64)
    exact = rows @ bank_set.matrix[pf.source[real]].T
    bank = np.searchsorted(bank_set.starts, pf.source[real], side="right") - 1
    slack = eps[:, bank] - np.abs(approx - exact)
    assert slack.min() >= 0
    assert np.abs(approx - exact).max() > 1e-3  # the codes alone are far coarser than float32


def test_near_ties_and_near_threshold_entries_match_as_the_float32_product() -> None:
    rng = np.random.default_rng(1)
    rows, pairs = adversarial(rng)
    plain, coded = both(pairs)
    assert coded.prefilter is not None
    product, _, _ = prefilter.approximate(coded.prefilter, rows)
    a, b = plain.match(rows), coded.match(rows)
    assert_same(a, b)
    # The codes alone pick another entry for some row: the float32 re-check is what decides.
    pf = coded.prefilter
    source = pf.source
    wrong = 0
    for bank in (0, 2, 3):
        cols = np.flatnonzero(pf.block_bank[np.arange(len(source)) // prefilter.BLOCK] == bank)
        cols = cols[source[cols] >= 0]
        picked = source[cols[product.numpy().T[:, cols].argmax(axis=1)]] - plain.starts[bank]
        wrong += int((picked != a.entry[:, bank]).sum())
    assert wrong > 0
    hits = a.similarity >= plain.thresholds[None, :]
    assert hits.any() and (~hits).any()


def test_verdicts_with_the_prefilter_are_the_plain_verdicts() -> None:
    rng = np.random.default_rng(2)
    rows, pairs = adversarial(rng)
    plain, coded = both(pairs)
    prompts = scoring.build_bank(parse_policy(POLICY), lambda t: units(rng, 1), 100.0)
    items = [[("image", r)] for r in rows]
    ids = [f"i{k}" for k in range(len(rows))]
    got = [
        scoring.decide_batch(prompts, items, item_ids=ids, tenants=[None] * len(rows), banks=s)
        for s in (plain, coded)
    ]
    matched = [o.bank_match for o in got[0] if o.bank_match is not None]
    assert {m.kind for m in matched} == {Action.BLOCK, Action.ALLOW, Action.REVIEW}
    for p, c in zip(*got, strict=True):
        assert p.action == c.action
        assert (p.bank_match is None) == (c.bank_match is None)
        if p.bank_match is not None and c.bank_match is not None:
            assert (p.bank_match.bank, p.bank_match.entry) == (
                c.bank_match.bank,
                c.bank_match.entry,
            )
            assert p.bank_match.similarity == pytest.approx(c.bank_match.similarity, abs=1e-6)


def test_ties_keep_the_first_entry_across_blocks_and_banks() -> None:
    """The same image three times in one bank (in different blocks, one of them the bank's last
    entry, whose copies pad its last block): the first one is the match, like `argmax`."""
    rng = np.random.default_rng(3)
    big, small = units(rng, 700), units(rng, 1)
    big[5] = big[300] = big[699]
    plain, coded = both(
        [(snap("one", Action.BLOCK, small), 0.9), (snap("big", Action.REVIEW, big), 0.9)]
    )
    rows = np.stack([big[699], small[0], *units(rng, 5)])
    a, b = plain.match(rows), coded.match(rows)
    assert_same(a, b)
    assert b.entry[0, 1] == 5 and b.entry[1, 0] == 0
    assert b.similarity[0, 1] == pytest.approx(1.0, abs=1e-6)


def test_rows_it_cannot_narrow_fall_back_to_the_plain_product() -> None:
    """A row of zeros (every entry ties), a bank of one image repeated, a non-finite row: the
    prefilter declines (None) and `match` answers with the float32 product."""
    rng = np.random.default_rng(4)
    same = np.repeat(units(rng, 1), 10_000, axis=0)
    plain, coded = both([(snap("same", Action.BLOCK, same), 0.9)])
    assert coded.prefilter is not None
    for rows in (np.zeros((2, DIM), np.float32), units(rng, 3)):
        assert prefilter.best(coded.prefilter, coded.matrix, coded.starts, rows) is None
        assert_same(plain.match(rows), coded.match(rows))
    bad = units(rng, 2)
    bad[1, 0] = np.nan
    assert prefilter.best(coded.prefilter, coded.matrix, coded.starts, bad) is None


def test_no_prefilter_where_the_int8_product_is_not_exact(monkeypatch: pytest.MonkeyPatch) -> None:
    rng = np.random.default_rng(5)
    pairs = [(snap("a", Action.BLOCK, units(rng, 100)), 0.9)]
    monkeypatch.setattr(prefilter, "_exact_kernel", lambda dim: False)
    assert stack(pairs, prefilter_at=0).prefilter is None
    monkeypatch.undo()
    assert stack(pairs, prefilter_at=0).prefilter is not None
    assert stack(pairs, prefilter_at=101).prefilter is None  # below the size it pays off at
    assert stack(pairs).prefilter is None  # backtests do not ask for it


def test_a_set_on_the_device_matches_there_and_a_cpu_runtime_gets_the_prefilter(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """On a GPU the product runs there (torch on the CPU stands in for it) and the prefilter is
    not consulted; a worker whose runtime device is the CPU gets the prefilter."""
    rng = np.random.default_rng(7)
    rows, pairs = adversarial(rng)
    plain, coded = both(pairs)
    assert stack(pairs, torch.device("cpu"), prefilter_at=0).prefilter is not None
    on_device = dataclasses.replace(coded, device_matrix=torch.from_numpy(coded.matrix))

    def refuse(*args: object) -> None:
        raise AssertionError("the prefilter ran for a set on the device")

    monkeypatch.setattr(prefilter, "best", refuse)
    assert_same(plain.match(rows), on_device.match(rows))


def test_the_int8_product_is_exact_on_a_cpu_without_vnni() -> None:
    """Without VNNI oneDNN multiplies int8 pairs into int16 (the module doc): with the ISA capped
    at AVX2 the self-check passes with 7-bit rows, the answers match the float32 product, and
    the self-check does catch the overflow that 8-bit rows would cause."""
    code = (
        "import numpy as np\n"
        "from clipmod.banks import prefilter\n"
        "from tests.unit.test_bank_prefilter import adversarial, both, assert_same\n"
        "assert prefilter._exact_kernel(128)\n"
        "rows, pairs = adversarial(np.random.default_rng(6))\n"
        "plain, coded = both(pairs)\n"
        "assert_same(plain.match(rows), coded.match(rows))\n"
        "prefilter.ROW_CODE = 127  # 8-bit rows overflow int16 pairs here: the check must see it\n"
        "prefilter._exact_kernel.cache_clear()\n"
        "assert not prefilter._exact_kernel(128)\n"
        "print('ok')\n"
    )
    env = {**os.environ, "ONEDNN_MAX_CPU_ISA": "AVX2", "ONEDNN_VERBOSE": "1"}
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=env,
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert "isa:Intel AVX2" in done.stdout and done.stdout.rstrip().endswith("ok")
