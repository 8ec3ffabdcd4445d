"""Re-execute the roiviz notebooks in place, each from a clean kernel, and store their outputs.

The stored outputs are what ``pytest --nbval`` (strict) compares against, so they must come from
a clean run in the pinned environment, never from a notebook saved after someone dragged an ROI.
This script runs every ``notebooks/NN_*.ipynb`` (or the ones named on the command line) top to
bottom with :mod:`nbclient`, in a fresh ``python3`` kernel of *this* interpreter, with ``HOME``
and ``MPLCONFIGDIR`` pointing at a temporary folder (so no user configuration leaks into the
outputs) and this checkout first on ``PYTHONPATH`` (so the kernel imports the ``roiviz`` next to
the notebooks, even when another checkout is installed in the environment), and writes each
notebook back with its outputs and execution counts 1..n.

Usage::

    .venv/bin/python scripts/execute_notebooks.py             # all notebooks, 01 .. NN
    .venv/bin/python scripts/execute_notebooks.py notebooks/03_roi_pool_vs_roi_align.ipynb
    .venv/bin/python scripts/execute_notebooks.py --check      # execute, do not write

It prints the wall time of each notebook and of the whole run (the project asks for all
notebooks together in <= 120 s on a 2-core CPU). Exit code 0 on success, 1 when a cell fails.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
NOTEBOOK_DIR = ROOT / "notebooks"


def notebook_paths(names: list[str] | None = None) -> list[Path]:
    """The notebooks to run: the ones named, or every ``notebooks/NN_*.ipynb`` in order."""
    if names:
        paths = [Path(n).resolve() for n in names]
        missing = [str(p) for p in paths if not p.is_file()]
        if missing:
            raise ValueError(f"notebooks not found: {', '.join(missing)}")
        return paths
    return sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))


def execute(path: Path, timeout: int = 300, write: bool = True) -> float:
    """Run one notebook from a clean kernel in its own folder; return the wall time in seconds.

    Raises ``nbclient.exceptions.CellExecutionError`` when a cell raises.
    """
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    nb.metadata.pop("widgets", None)  # a clean run: no widget state left from an earlier session
    # The kernelspec "python3" resolves to this interpreter (jupyter_client swaps a bare
    # "python" in the kernel's argv for sys.executable), so the project venv runs the cells.
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",
        resources={"metadata": {"path": str(path.parent)}},
        record_timing=False,  # no wall-clock timestamps in the stored metadata
        coalesce_streams=True,  # one stdout output per cell, however the kernel chunked it
        store_widget_state=False,  # random model ids and live values: noise in every diff
    )
    start = time.perf_counter()
    client.execute()
    elapsed = time.perf_counter() - start
    if write:
        nbformat.write(nb, path)
    return elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("notebooks", nargs="*", help="notebooks to run (default: all in notebooks/)")
    parser.add_argument("--timeout", type=int, default=300, help="per-cell timeout in seconds")
    parser.add_argument("--check", action="store_true", help="execute but do not write outputs")
    args = parser.parse_args(argv)
    if args.timeout <= 0:
        parser.error(f"--timeout must be positive, got {args.timeout}")

    from nbclient.exceptions import CellExecutionError

    paths = notebook_paths(args.notebooks)
    if not paths:
        print(f"no notebooks found in {NOTEBOOK_DIR}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory(prefix="roiviz-nb-home-") as home:
        # A clean HOME and matplotlib config for the kernels (they inherit the environment).
        os.environ["HOME"] = home
        os.environ["MPLCONFIGDIR"] = os.path.join(home, "mpl")
        os.environ.pop("MPLBACKEND", None)  # let the notebooks pick inline / widget themselves
        # The kernels inherit this environment: this checkout's roiviz comes first.
        os.environ["PYTHONPATH"] = os.pathsep.join(
            [str(ROOT), *(p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p)])
        total = 0.0
        for path in paths:
            try:
                elapsed = execute(path, timeout=args.timeout, write=not args.check)
            except CellExecutionError as err:
                print(f"FAILED {path.relative_to(ROOT)}\n{err}", file=sys.stderr)
                return 1
            total += elapsed
            print(f"{elapsed:7.1f} s  {path.relative_to(ROOT)}", flush=True)
        print(f"{total:7.1f} s  all {len(paths)} notebooks", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
