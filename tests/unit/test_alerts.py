"""The example alert rules name metrics that the API and the worker really export."""

from __future__ import annotations

import re
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import api.observability  # noqa: F401 - registers the API's metrics
import workers.metrics  # noqa: F401 - registers the worker's metrics

RULES = Path(__file__).resolve().parents[2] / "deploy" / "alerts.yml"


def test_alert_rules_use_exported_metrics() -> None:
    exported = set()
    for family in REGISTRY.collect():
        exported.add(family.name)
        if family.type == "counter":
            exported.add(family.name + "_total")  # a labelled counter has no sample until used
        exported.update(sample.name for sample in family.samples)
    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    assert any("oldest_queued_age_seconds" in r["expr"] and "120" in r["expr"] for r in rules)
    for rule in rules:
        for name in re.findall(r"clipmod_\w+", rule["expr"]):
            assert name in exported, f"{rule['alert']}: {name} is not exported"


def test_the_transient_failure_alert_names_the_codes_a_retry_is_for() -> None:
    from clipmod.retry import TRANSIENT_CODES

    rules = yaml.safe_load(RULES.read_text())["groups"][0]["rules"]
    (rule,) = [r for r in rules if r["alert"] == "ClipmodTransientFailures"]
    codes = re.search(r'code=~"([^"]+)"', rule["expr"])
    assert codes is not None and set(codes.group(1).split("|")) == set(TRANSIENT_CODES)
