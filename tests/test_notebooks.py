"""The notebooks are tested like product: stored outputs from a clean run, then nbval in strict mode.

- ``test_stored_outputs_*``: every code cell of every notebook has a stored execution count, the
  counts run 1..n in order (the outputs were made by one clean top-to-bottom run, e.g.
  ``scripts/execute_notebooks.py``), and no cell stored an error. nbval never compares a cell
  whose count is null, so without this check a notebook with cleared outputs would pass
  strict mode while checking nothing.
- ``test_nbval_strict``: runs ``pytest --nbval`` (strict: every output compared, no ``--nbval-lax``)
  on each notebook in a subprocess, with the project's sanitizer, this interpreter as kernel
  (``--nbval-current-env``) and a temporary ``HOME``/``MPLCONFIGDIR``; it asserts that every code
  cell was collected and passed.

To refresh the stored outputs after changing a notebook or roiviz::

    .venv/bin/python scripts/execute_notebooks.py
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SANITIZER = NOTEBOOK_DIR / "nbval_sanitize.cfg"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
IGNORE_MARKER = "# NBVAL_IGNORE_OUTPUT"

pytestmark = pytest.mark.notebooks


def _load(path: Path) -> dict:
    return json.loads(path.read_text(encoding="utf-8"))


def _code_cells(nb: dict) -> list[dict]:
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def _source(cell: dict) -> str:
    src = cell["source"]
    return "".join(src) if isinstance(src, list) else src


def _ids(path: Path) -> str:
    return path.stem


def test_five_notebooks_in_order() -> None:
    prefixes = [p.name[:3] for p in NOTEBOOKS]
    assert prefixes == ["01_", "02_", "03_", "04_", "05_"], [p.name for p in NOTEBOOKS]
    assert SANITIZER.is_file()


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_stored_outputs_come_from_one_clean_run(path: Path) -> None:
    nb = _load(path)
    cells = _code_cells(nb)
    assert cells, f"{path.name} has no code cells"
    counts = [c["execution_count"] for c in cells]
    assert None not in counts, (
        f"{path.name}: code cells without a stored execution count (nbval would not compare "
        f"them): {[i for i, n in enumerate(counts) if n is None]}; run scripts/execute_notebooks.py"
    )
    assert counts == list(range(1, len(cells) + 1)), (
        f"{path.name}: execution counts {counts} are not 1..{len(cells)} in order, so the outputs "
        "are not from one clean top-to-bottom run; run scripts/execute_notebooks.py"
    )
    for i, cell in enumerate(cells):
        assert _source(cell).strip(), f"{path.name}: code cell {i} is empty"
        for out in cell["outputs"]:
            assert out["output_type"] != "error", f"{path.name}: code cell {i} stored an error"
            if out["output_type"] == "execute_result":
                assert out["execution_count"] == cell["execution_count"]
            # An ipympl canvas displayed on its own stores a text/html PNG snapshot that nbval
            # compares and that changes with matplotlib/FreeType: canvases go inside a VBox/HBox.
            html = "".join(out.get("data", {}).get("text/html", ""))
            assert "data:image/png;base64" not in html, (
                f"{path.name}: code cell {i} stored a canvas snapshot as text/html"
            )
    assert nb["metadata"]["kernelspec"]["name"] == "python3"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_notebook_teaches_and_ignores_output_only_where_it_must(path: Path) -> None:
    nb = _load(path)
    first = nb["cells"][0]
    assert first["cell_type"] == "markdown" and _source(first).lstrip().startswith("# "), (
        f"{path.name} must open with a markdown title stating its question"
    )
    prose = sum(len(_source(c)) for c in nb["cells"] if c["cell_type"] == "markdown")
    assert prose > 1500, f"{path.name}: only {prose} characters of explanation"
    cells = _code_cells(nb)
    has_figure = any(
        "image/png" in out.get("data", {}) or "application/vnd.jupyter.widget-view+json" in out.get("data", {})
        for c in cells for out in c["outputs"]
    )
    assert has_figure, f"{path.name} shows no figure"
    ignored = [c for c in cells if IGNORE_MARKER in _source(c)]
    # Ignoring a cell's output is for numbers that vary by nature (timings), and is said so:
    # the marker's line is followed by a comment giving the reason.
    assert len(ignored) <= max(1, len(cells) // 3), f"{path.name}: too many ignored cells"
    for cell in ignored:
        lines = [ln.strip() for ln in _source(cell).splitlines()]
        at = lines.index(IGNORE_MARKER)
        assert at + 1 < len(lines) and lines[at + 1].startswith("#"), (
            f"{path.name}: say why on the line after {IGNORE_MARKER}"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_nbval_strict(path: Path, tmp_path: Path) -> None:
    n_cells = len(_code_cells(_load(path)))
    env = dict(os.environ)
    env.update(HOME=str(tmp_path), MPLCONFIGDIR=str(tmp_path / "mpl"), PYTHONHASHSEED="0")
    env.pop("MPLBACKEND", None)  # conftest sets Agg for unit tests; notebooks choose their own
    cmd = [
        sys.executable, "-m", "pytest",
        "--nbval", "--nbval-current-env",
        "--nbval-sanitize-with", str(SANITIZER),
        "--nbval-cell-timeout", "300",
        "-p", "no:cacheprovider", "-q", "-rfEs",
        str(path),
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, f"nbval failed on {path.name}:\n{report}"
    # Strict and complete: every code cell was collected as a test and passed, none skipped.
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) == n_cells, report
    assert "skipped" not in proc.stdout.splitlines()[-1], report
