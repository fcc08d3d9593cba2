"""A plain (non-editable) install works: migrations, the bundled model and the policies are
found inside the installed package, not in a source checkout."""

from __future__ import annotations

import os
import subprocess
import sys
import sysconfig
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.e2e
def test_wheel_install_runs_migrations_and_eval_from_elsewhere(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "wheel",
            "--no-deps",
            "--no-build-isolation",
            "-q",
            "-w",
            str(wheels),
            str(ROOT),
        ],
        check=True,
        cwd=tmp_path,
    )
    wheel = next(wheels.glob("clipmod-*.whl"))
    with zipfile.ZipFile(wheel) as whl:
        shipped = set(whl.namelist())
    editor = {  # the policy editor runs from the installed package, with its licences
        "api/dashboard/static/vendor/codemirror.js",
        "api/dashboard/static/vendor/codemirror.LICENSES.txt",
        "api/dashboard/static/editor.js",
        "api/dashboard/templates/policy_editor.html",
    }
    assert editor <= shipped, sorted(editor - shipped)
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    site = Path(
        subprocess.run(
            [py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.strip()
    )
    subprocess.run(
        [
            sys.executable,
            "-m",
            "pip",
            "install",
            "-q",
            "--no-deps",
            "--target",
            str(site),
            str(wheel),
        ],
        check=True,
    )
    # The dependencies (torch, transformers, …) come from this environment, read-only: only
    # the wheel's own packages are new, and they shadow nothing because the checkout is not on
    # the path (we run from another directory).
    (site / "deps.pth").write_text(sysconfig.get_paths()["purelib"] + "\n")
    work = tmp_path / "elsewhere"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if not k.startswith("CLIPMOD_")}
    env.update(CLIPMOD_DATA_DIR=str(work / "var"), HF_HUB_OFFLINE="1", PYTHONPATH="")

    def clipmod(*args: str) -> str:
        done = subprocess.run(
            [py, "-c", "import sys; from cli.main import main; sys.exit(main())", *args],
            cwd=work,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert done.returncode == 0, done.stdout + done.stderr
        return done.stdout

    where = subprocess.run(
        [py, "-c", "import clipmod, migrations; print(clipmod.__file__, migrations.__file__)"],
        cwd=work,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert str(site) in where and str(ROOT) not in where
    assert "database at head" in clipmod("db", "upgrade")
    assert "zero-shot" in clipmod("eval", "--n", "50").lower()
