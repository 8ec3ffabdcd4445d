"""The packaging agrees with itself: pyproject, environment.yml, README, CI, lint."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
import yaml

import roiviz

ROOT = Path(__file__).resolve().parents[1]
# conda-forge names of PyPI packages, where they differ.
CONDA_NAMES = {"torch": "pytorch"}


def _requirement(spec: str) -> tuple[str, str]:
    spec = spec.split(";")[0]  # an environment marker is where, not what
    match = re.fullmatch(r"([A-Za-z0-9_.\-]+)(?:\[[^\]]*\])?\s*(.*)", spec.strip())
    assert match, spec
    return match.group(1).lower(), match.group(2).replace(" ", "")


def _pyproject_requirements() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    specs = list(project["dependencies"])
    for extra in project["optional-dependencies"].values():
        specs += [s for s in extra if not s.startswith("roiviz")]
    return dict(_requirement(s) for s in specs)


def test_environment_yml_agrees_with_pyproject():
    env = yaml.safe_load((ROOT / "environment.yml").read_text())
    conda, pip = {}, {}
    for item in env["dependencies"]:
        if isinstance(item, dict):
            pip.update(_requirement(s) for s in item["pip"] if not s.startswith("-e"))
        elif item not in ("pip",) and not item.startswith("python"):
            name, version = _requirement(item)
            conda[name] = version
    expected = _pyproject_requirements()
    listed = {**conda, **pip}
    wanted = {CONDA_NAMES.get(name, name) if name not in pip else name: v for name, v in expected.items()}
    assert listed == wanted


def test_torch_is_a_loose_range_in_the_metadata():
    assert _pyproject_requirements()["torch"] == ">=2.2"


def test_readme_opens_with_two_setup_commands_and_ci_runs_the_test_one():
    readme = (ROOT / "README.md").read_text()
    first_block = re.search(r"```(?:bash|sh)?\n(.*?)```", readme, re.S)
    assert first_block, "README has no command block"
    commands = [line.split("#")[0].strip() for line in first_block.group(1).splitlines() if line.split("#")[0].strip()]
    assert commands == ["make lab", "make test"]
    assert "make test" in (ROOT / ".ci" / "run").read_text()
    makefile = (ROOT / "Makefile").read_text()
    assert "TORCH  ?= torch==2.13.0" in makefile


def test_console_script_dispatches():
    out = subprocess.run([sys.executable, "-m", "roiviz", "--help"], capture_output=True, text=True, check=True)
    assert "demo" in out.stdout and "bench" in out.stdout and "experiment" in out.stdout
    bad = subprocess.run([sys.executable, "-m", "roiviz", "nope"], capture_output=True, text=True)
    assert bad.returncode == 2 and "unknown command 'nope'" in bad.stderr


def test_version_matches_metadata():
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    assert roiviz.__version__ == project["version"]


def test_ruff_clean():
    ruff = shutil.which("ruff") or str(Path(sys.executable).with_name("ruff"))
    if not Path(ruff).exists():
        pytest.skip("ruff is not installed")
    out = subprocess.run([ruff, "check", str(ROOT)], capture_output=True, text=True, cwd=ROOT)
    assert out.returncode == 0, out.stdout + out.stderr


def test_readme_python_examples_run():
    readme = (ROOT / "README.md").read_text()
    blocks = re.findall(r"```python\n(.*?)```", readme, re.S)
    assert blocks, "README has no python example"
    for block in blocks:
        exec(compile(block, "README.md", "exec"), {})
