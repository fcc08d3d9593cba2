"""`validate.check` with the editor's caches says exactly what it says without them."""

from __future__ import annotations

from typing import Any

import numpy as np
from sqlalchemy.orm import Session, sessionmaker

from clipmod.policy import validate
from clipmod.policy.rescore import BankCache
from tests.policy.conftest import StoreFn, policy_text, unit_rows


def test_caches_change_no_finding(
    sessions: sessionmaker[Session], runtime: Any, store: StoreFn
) -> None:
    rng = np.random.default_rng(11)
    for row in unit_rows(rng, 30, runtime.dim):
        store("acme", row)
    texts = [
        policy_text(weapons=(0.5, 0.8), drugs=(0.3, 0.9)),
        policy_text(weapons=(0.999, 0.9995), drugs=(-0.5, -0.4)),  # thresholds only
        policy_text(weapons=(0.999, 0.9995)).replace("a photo of a gun", "a photo of a rifle"),
        policy_text(weapons=(0.5, 0.8), drugs=(0.3, 0.9)),  # back to the first
    ]
    encoder = validate.CachingEncoder(runtime)
    traffic, scores, banks = validate.TrafficCache(), validate.ScoreCache(), BankCache()
    with sessions() as s:
        seen = []
        for text in texts:
            plain = validate.check(text, runtime=runtime, session=s, model_name="m")
            cached = validate.check(
                text,
                runtime=encoder,
                session=s,
                model_name="m",
                traffic=traffic.get(s, runtime.revision),
                banks=banks,
                scores=scores,
            )
            assert cached.markers() == plain.markers()
            seen.append({m["code"] for m in plain.markers()})
        store("acme", unit_rows(rng, 1, runtime.dim)[0])  # new traffic: read again
        assert len(traffic.get(s, runtime.revision)) == 31
    assert {"never_flags", "reviews_all_traffic"} <= seen[1]  # the checks did run
