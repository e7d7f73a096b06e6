"""The ``qmri train <task> ...`` command line that is running, for model cards (torch-free).

``qmri``'s ``main`` records the arguments it parsed (:func:`set_argv`), and a replayed recipe the
arguments of each stage, so a card names the command that trained its weights even when ``main``
is called in-process or runs several stages.
"""

from __future__ import annotations

import sys

_argv: list[str] | None = None


def set_argv(argv: list[str] | None) -> None:
    global _argv
    _argv = None if argv is None else [str(a) for a in argv]


def training_command(task: str) -> str:
    """``qmri train <task> <options>`` from the recorded arguments (else ``sys.argv``)."""
    argv = _argv if _argv is not None else sys.argv[1:]
    rest = argv[argv.index(task) + 1 :] if "train" in argv and task in argv else []
    return " ".join(["qmri train", task] + rest)
