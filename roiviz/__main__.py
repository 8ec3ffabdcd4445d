"""The ``roiviz`` command: ``roiviz demo``, ``bench``, ``experiment``, ``explore`` and ``compile``.

Each subcommand lives with its idea (:mod:`roiviz.demo`, :mod:`roiviz.bench`,
:mod:`roiviz.experiments`) and exposes ``main(argv) -> int``; this module only dispatches,
importing the chosen one lazily so that ``roiviz demo`` does not pay for the experiment.
"""

from __future__ import annotations

import importlib
import sys

COMMANDS = {
    "demo": ("roiviz.demo", "write the main figures as PNG files"),
    "bench": ("roiviz.bench", "time every op and strategy (against torchvision when installed)"),
    "experiment": ("roiviz.experiments", "train a small head per strategy and compare them"),
    "explore": ("roiviz.explore", "the Explorer alone on a page (Voila), e.g. for a projector"),
    "compile": ("roiviz.ops._numba", "compile the CPU kernels now, so that a first call does not wait"),
}


def _usage() -> str:
    lines = ["usage: roiviz {demo,bench,experiment,explore,compile} [options]", "", "commands:"]
    lines += [f"  {name:<11} {help_}" for name, (_, help_) in COMMANDS.items()]
    lines += ["", "Run 'roiviz COMMAND --help' for a command's options."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"roiviz: unknown command {name!r}\n\n{_usage()}", file=sys.stderr)
        return 2
    module = importlib.import_module(COMMANDS[name][0])
    return int(module.main(rest) or 0)


if __name__ == "__main__":
    sys.exit(main())
