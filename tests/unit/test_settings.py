from __future__ import annotations

from pathlib import Path

import pytest

from clipmod import settings


def test_defaults_run_on_a_laptop(tmp_path: Path) -> None:
    s = settings.load({"CLIPMOD_DATA_DIR": str(tmp_path)})
    assert s.database_url == f"sqlite:///{tmp_path / 'clipmod.db'}"
    assert s.broker_url == f"sqla+sqlite:///{tmp_path / 'broker.db'}"
    assert s.uses_embedded_broker
    assert Path(s.model) == settings.BUNDLED_MODEL
    assert s.policy == settings.BUNDLED_POLICY and s.policy.exists()
    assert (s.device, s.batch_size) == ("auto", 32)


@pytest.mark.parametrize(("cores", "expected"), [(1, 0), (2, 0), (4, 3), (16, 15), (64, 16)])
def test_decode_processes_default_follows_the_cores(cores: int, expected: int) -> None:
    assert settings.default_decode_processes(cores) == expected


def test_decode_processes_round_trip_to_a_child(tmp_path: Path) -> None:
    s = settings.load({"CLIPMOD_DATA_DIR": str(tmp_path), "CLIPMOD_DECODE_PROCESSES": "3"})
    assert s.decode_processes == 3
    assert settings.load(s.to_env()).decode_processes == 3


def test_overrides(tmp_path: Path) -> None:
    s = settings.load(
        {
            "CLIPMOD_DATA_DIR": str(tmp_path),
            "CLIPMOD_BROKER_URL": "redis://127.0.0.1:6390/0",
            "CLIPMOD_BATCH_SIZE": "64",
            "CLIPMOD_DEVICE": "cuda:1",
        }
    )
    assert not s.uses_embedded_broker
    assert (s.batch_size, s.device) == (64, "cuda:1")


@pytest.mark.parametrize(
    ("name", "value", "fragment"),
    [
        ("BATCH_SIZE", "many", "not an integer"),
        ("BATCH_SIZE", "0", "must be >= 1"),
        ("DEVICE", "tpu", "must be one of"),
        ("POLICY_REFRESH_S", "soon", "not a number"),
    ],
)
def test_bad_values_name_the_variable(name: str, value: str, fragment: str) -> None:
    with pytest.raises(settings.SettingsError, match=f"CLIPMOD_{name}.*{fragment}"):
        settings.load({f"CLIPMOD_{name}": value})
