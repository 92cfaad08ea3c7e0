"""The package as users get it: a wheel that carries the profiles, recipes, demo and device runner;
a CLI that offers every stage."""
from __future__ import annotations

import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.mark.slow
def test_wheel_ships_profiles_recipes_demo_and_runner(tmp_path: Path) -> None:
    subprocess.run([sys.executable, "-m", "pip", "wheel", str(ROOT), "--no-deps", "--no-build-isolation", "-q",
                    "-w", str(tmp_path)], check=True)
    wheel = next(tmp_path.glob("edgekit-*.whl"))
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped_targets = {p.name for p in (ROOT / "targets").glob("*.yaml")}
    assert len(shipped_targets) >= 7
    assert {f"edgekit/_shipped/targets/{n}" for n in shipped_targets} <= names
    assert {"edgekit/_shipped/calibration/imagenet.yaml", "edgekit/_shipped/calibration/digits.yaml",
            "edgekit/pipeline/demo.yaml"} <= names
    runner = {f"edgekit/runtime/device_runner/{p.name}" for p in (ROOT / "edgekit/runtime/device_runner").glob("*.py")}
    assert {"edgekit/runtime/device_runner/__main__.py", "edgekit/runtime/device_runner/registry.py"} <= runner <= names


def test_cli_offers_every_stage() -> None:
    proc = subprocess.run([sys.executable, "-m", "edgekit", "--help"], capture_output=True, text=True, check=True)
    for command in ("export", "inspect", "prune", "sparsify", "quantize", "eval", "targets", "bench", "report",
                    "run", "demo"):
        assert command in proc.stdout, command
