"""A plain (non-editable) wheel installs the four stage folders as `llmca_data.*` subpackages."""

from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.slow
def test_wheel_layout_and_import_from_another_directory(tmp_path: Path) -> None:
    wheels = tmp_path / "wheels"
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels), str(ROOT)],
        check=True,
        capture_output=True,
    )
    (wheel,) = wheels.glob("llmca_data-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "llmca_data/templates/DATASET_CARD.md" in names, "the dataset card template must ship in the wheel"
    for sub in ("annotation", "loaders", "baselines", "leaderboard"):
        assert f"llmca_data/{sub}/__init__.py" in names
        assert not any(n.startswith(f"{sub}/") for n in names), f"generic top-level package {sub} installed"
    target = tmp_path / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(target), str(wheel)],
        check=True,
        capture_output=True,
    )
    code = (
        "import llmca_data, llmca_data.annotation, llmca_data.loaders, llmca_data.baselines, llmca_data.leaderboard;"
        "from llmca_data.envs import make_env; make_env('spaceworld-10x10-3a').reset(0);"
        "print(llmca_data.__file__)"
    )
    proc = subprocess.run(
        [sys.executable, "-c", code],
        cwd=tmp_path,
        env={"PYTHONPATH": str(target), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().startswith(str(target))
