"""roiviz demo: writes the main figures as PNG files and says where."""

from __future__ import annotations

import pytest

from roiviz import demo
from roiviz.__main__ import main as cli


def test_demo_writes_every_figure(tmp_path, capsys):
    assert demo.main(["--out", str(tmp_path / "figs"), "--size", "48", "--dpi", "40"]) == 0
    printed = capsys.readouterr().out.split()
    expected = [str(tmp_path / "figs" / name) for name in demo.FIGURES.values()]
    assert printed == expected
    for path in expected:
        with open(path, "rb") as f:
            data = f.read()
        assert data.startswith(b"\x89PNG") and len(data) > 1000


def test_cli_dispatches_to_demo(tmp_path, capsys):
    code = cli(["demo", "--out", str(tmp_path), "--size", "32", "--dpi", "40", "--only", "roi_pool",
                "--image", "checkerboard", "--box", "4", "4", "20", "28"])
    assert code == 0
    assert capsys.readouterr().out.strip() == str(tmp_path / "roi_pool_quantization.png")


@pytest.mark.parametrize(
    "argv, message",
    [(["--size", "8"], "--size"), (["--box", "10", "10", "5", "20"], "--box"), (["--output-size", "0"], "--output-size")],
)
def test_demo_bad_arguments(tmp_path, capsys, argv, message):
    assert demo.main(["--out", str(tmp_path), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_demo_requires_out(capsys):
    with pytest.raises(SystemExit):
        demo.main([])
    assert "--out" in capsys.readouterr().err
