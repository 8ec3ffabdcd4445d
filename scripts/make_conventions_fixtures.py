"""Store ONNX's published RoiAlign test vectors as JSON, for ``tests/test_conventions.py``.

The ONNX backend test cases (``onnx/backend/test/case/node/roialign.py``: ``aligned_false``,
``aligned_true``, ``mode_max``) are the official vectors every ONNX runtime is tested on. This
script runs their ``export_*`` functions with ``expect`` replaced by a recorder and writes the
node attributes, inputs and expected outputs, so that the tests check
:func:`roiviz.conventions.roi_align_onnx` against them on a machine without ``onnx``.

Run it from the repository root where ``onnx`` is installed::

    .venv/bin/python scripts/make_conventions_fixtures.py           # writes the fixture
    .venv/bin/python scripts/make_conventions_fixtures.py --check   # compare with the stored one
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

try:
    import onnx
    from onnx import helper
    from onnx.backend.test.case.node import roialign
except ImportError as exc:  # pragma: no cover - depends on the environment
    sys.exit(f"make_conventions_fixtures.py needs the onnx package: {exc}")

OUT = Path(__file__).resolve().parents[1] / "tests" / "fixtures" / "onnx_roialign_cases.json"


def collect() -> dict:
    cases = []

    def record(node, inputs, outputs, name, **_kwargs):
        attrs = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        attrs = {k: v.decode() if isinstance(v, bytes) else v for k, v in attrs.items()}
        x, rois, batch_indices = inputs
        cases.append({
            "name": name, "attributes": attrs,
            "X": {"shape": list(x.shape), "data": x.ravel().tolist()},
            "rois": rois.tolist(), "batch_indices": batch_indices.tolist(),
            "Y": {"shape": list(outputs[0].shape), "data": outputs[0].ravel().tolist()},
        })

    roialign.expect = record  # the module looked `expect` up at import: replace it there
    for name in sorted(dir(roialign.RoiAlign)):
        if name.startswith("export"):
            getattr(roialign.RoiAlign, name)()
    return {"meta": {"onnx": onnx.__version__, "source": "onnx/backend/test/case/node/roialign.py"},
            "cases": cases}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="compare with the stored file, do not write")
    args = parser.parse_args(argv)
    data = collect()
    text = json.dumps(data, indent=1) + "\n"
    if args.check:
        stored = json.loads(OUT.read_text())
        same = stored["cases"] == data["cases"]
        print("same cases" if same else "DIFFERENT cases")
        return 0 if same else 1
    OUT.write_text(text)
    print(f"wrote {len(data['cases'])} cases to {OUT}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
