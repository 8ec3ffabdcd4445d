"""The notebooks are tested like product: stored outputs from a clean run, then nbval in strict mode.

- ``test_stored_outputs_*``: every code cell of every notebook has a stored execution count, the
  counts run 1..n in order (the outputs were made by one clean top-to-bottom run, e.g.
  ``scripts/execute_notebooks.py``), and no cell stored an error. nbval never compares a cell
  whose count is null, so without this check a notebook with cleared outputs would pass
  strict mode while checking nothing.
- ``test_nbval_strict``: runs ``pytest --nbval`` (strict: every output compared, no ``--nbval-lax``)
  on each notebook in a subprocess, with the project's sanitizer, this interpreter as kernel
  (``--nbval-current-env``) and a temporary ``HOME``/``MPLCONFIGDIR``; it asserts that every code
  cell was collected and passed. It does so three ways (:data:`MODES`): as stored, with
  ``ATEN_CPU_CAPABILITY=default`` (no AVX kernels) and with one thread. Those change float
  results the way another CPU would, so a stored output that holds only on the machine that
  made it fails here. In the two variants a probe notebook runs in the same session and checks,
  in its kernel, that the setting took effect.
- ``test_code_lines_are_not_cut_off``: no code line is longer than :data:`MAX_CODE_LINE`.
- ``test_figures_fit_the_notebook``: every stored PNG is at most :data:`MAX_FIGURE_PX` wide
  (10 inches at the inline backend's 100 dpi), so JupyterLab shows it at (nearly) full size
  and its 9-10 pt text stays >= 10 px on screen.

To refresh the stored outputs after changing a notebook or roiviz::

    .venv/bin/python scripts/execute_notebooks.py
"""

from __future__ import annotations

import base64
import io
import json
import os
import re
import struct
import subprocess
import sys
from pathlib import Path

import pytest
from matplotlib.figure import Figure

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"
SANITIZER = NOTEBOOK_DIR / "nbval_sanitize.cfg"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
IGNORE_MARKER = "# NBVAL_IGNORE_OUTPUT"
#: The widest stored figure allowed, in pixels: 10 inches at the inline backend's 100 dpi.
#: A wider PNG is shrunk to the notebook's width, and its text with it.
MAX_FIGURE_PX = 1000
#: The longest code line: about what a JupyterLab cell shows at the default font and a 1280 px
#: window before the line is cut off behind a horizontal scroll bar.
MAX_CODE_LINE = 95
#: How test_nbval_strict runs the notebooks: extra environment, and a probe (code, the output
#: it must print in the kernel) proving that the setting reached the kernel.
MODES: dict[str, tuple[dict[str, str], tuple[str, str] | None]] = {
    "stored": ({}, None),
    "cpu-default": (
        {"ATEN_CPU_CAPABILITY": "default"},
        ("import torch\nprint(torch.backends.cpu.get_cpu_capability())", "DEFAULT\n"),
    ),
    "one-thread": (
        {"OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"},
        ("import torch\nprint(torch.get_num_threads())", "1\n"),
    ),
}

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


def test_notebooks_numbered_in_order() -> None:
    # 01_ .. NN_ with no gap or duplicate: the notebooks are read in that order.
    prefixes = [p.name[:3] for p in NOTEBOOKS]
    assert len(prefixes) >= 5, [p.name for p in NOTEBOOKS]
    assert prefixes == [f"{i:02d}_" for i in range(1, len(prefixes) + 1)], [p.name for p in NOTEBOOKS]
    assert SANITIZER.is_file()


def _png_size(data: str) -> tuple[int, int]:
    raw = base64.b64decode(data)
    assert raw[:8] == b"\x89PNG\r\n\x1a\n" and raw[12:16] == b"IHDR", "not a PNG"
    width, height = struct.unpack(">II", raw[16:24])
    return width, height


def test_png_size_reader() -> None:
    fig = Figure(figsize=(3, 2), dpi=100)
    fig.add_subplot().plot([0, 1])
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    assert _png_size(base64.b64encode(buf.getvalue()).decode()) == (300, 200)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_figures_fit_the_notebook(path: Path) -> None:
    too_wide = []
    for i, cell in enumerate(_code_cells(_load(path))):
        for out in cell["outputs"]:
            png = out.get("data", {}).get("image/png")
            if png is not None:
                width, height = _png_size("".join(png) if isinstance(png, list) else png)
                if width > MAX_FIGURE_PX:
                    too_wide.append(f"code cell {i}: {width}x{height} px")
    assert not too_wide, (
        f"{path.name}: figures wider than {MAX_FIGURE_PX} px (10 in at 100 dpi) are shrunk to the "
        f"notebook's width, and their text with them: {too_wide}"
    )


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
    # Ignoring a cell's output is for numbers that vary by nature (timings, training results),
    # and is said so: the marker's line is followed by a comment giving the reason. What such a
    # cell shows is claimed in words by a compared cell next to it, so most cells stay compared.
    assert len(ignored) <= max(1, len(cells) // 2), f"{path.name}: too many ignored cells"
    for cell in ignored:
        lines = [ln.strip() for ln in _source(cell).splitlines()]
        at = lines.index(IGNORE_MARKER)
        assert at + 1 < len(lines) and lines[at + 1].startswith("#"), (
            f"{path.name}: say why on the line after {IGNORE_MARKER}"
        )


@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_code_lines_are_not_cut_off(path: Path) -> None:
    long = [
        f"code cell {i}: {len(line)} characters: {line.strip()[:40]}..."
        for i, cell in enumerate(_code_cells(_load(path)))
        for line in _source(cell).splitlines()
        if len(line) > MAX_CODE_LINE
    ]
    assert not long, f"{path.name}: code lines longer than {MAX_CODE_LINE} characters: {long}"


def _probe_notebook(folder: Path, code: str, expected: str) -> Path:
    """A one-cell notebook whose stored output is what the kernel must print in this mode."""
    import nbformat

    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    cell = nbformat.v4.new_code_cell(code, execution_count=1)
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text=expected)]
    nb.cells = [cell]
    path = folder / "probe_kernel_setting.ipynb"
    nbformat.write(nb, path)
    return path


@pytest.mark.parametrize("mode", list(MODES))
@pytest.mark.parametrize("path", NOTEBOOKS, ids=_ids)
def test_nbval_strict(path: Path, mode: str, tmp_path: Path) -> None:
    n_cells = len(_code_cells(_load(path)))
    extra, probe = MODES[mode]
    env = dict(os.environ)
    env.update(HOME=str(tmp_path), MPLCONFIGDIR=str(tmp_path / "mpl"), PYTHONHASHSEED="0", **extra)
    env.pop("MPLBACKEND", None)  # conftest sets Agg for unit tests; notebooks choose their own
    paths = [str(path)]
    if probe is not None:
        paths.append(str(_probe_notebook(tmp_path, *probe)))
        n_cells += 1
    cmd = [
        sys.executable, "-m", "pytest",
        "--nbval", "--nbval-current-env",
        "--nbval-sanitize-with", str(SANITIZER),
        "--nbval-cell-timeout", "300",
        "-p", "no:cacheprovider", "-q", "-rfEs",
        *paths,
    ]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    report = proc.stdout[-20000:] + proc.stderr[-5000:]
    assert proc.returncode == 0, f"nbval ({mode}: {extra or 'as stored'}) failed on {path.name}:\n{report}"
    # Strict and complete: every code cell was collected as a test and passed, none skipped.
    summary = re.search(r"(\d+) passed", proc.stdout)
    assert summary and int(summary.group(1)) == n_cells, report
    assert "skipped" not in proc.stdout.splitlines()[-1], report
