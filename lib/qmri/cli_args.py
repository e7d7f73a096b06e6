"""Argument checks of the ``qmri`` command line: argparse ``type=`` functions and path checks.

The type functions raise :class:`argparse.ArgumentTypeError`, so a bad value ends in argparse's usual
``error: argument --subjects: must be a positive integer, got -1`` (exit code 2) before any work.
:func:`writable_dir` checks an output folder (creating it) and :func:`readable_file` an input file;
both raise :class:`PathError` with the reason, which ``qmri.cli`` turns into a usage error naming the
flag. This module imports nothing heavy: building the parser must stay fast.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import tempfile
from pathlib import Path


class PathError(ValueError):
    """An input or output path that cannot be used; the message is the reason."""


def _number(kind, s: str, what: str):
    try:
        v = kind(s)
    except (TypeError, ValueError):
        raise argparse.ArgumentTypeError(f"must be {what}, got {s}") from None
    if kind is float and not math.isfinite(v):
        raise argparse.ArgumentTypeError(f"must be {what}, got {s}")
    return v


def _bounded(kind, what: str, ok):
    """An argparse type: ``kind`` (int or float, finite) for which ``ok(value)`` holds, else
    argparse's usual error naming ``what`` and the given text."""

    def parse(s: str):
        v = _number(kind, s, what)
        if not ok(v):
            raise argparse.ArgumentTypeError(f"must be {what}, got {s}")
        return v

    return parse


#: counts: subjects, epochs, steps, batch, workers...
positive_int = _bounded(int, "a positive integer", lambda v: v >= 1)
#: seeds, offsets, optional step counts where 0 means off
nonneg_int = _bounded(int, "a non-negative integer", lambda v: v >= 0)
#: resolutions, learning rates, minutes
positive_float = _bounded(float, "a positive number", lambda v: v > 0)
#: loss weights where 0 means off
nonneg_float = _bounded(float, "a non-negative number", lambda v: v >= 0)
#: decay factors
unit_interval = _bounded(float, "a number in [0, 1)", lambda v: 0 <= v < 1)
#: fractions of a batch
unit_fraction = _bounded(float, "a number in [0, 1]", lambda v: 0 <= v <= 1)


def int_list(s: str) -> str:
    """Comma-separated positive integers, e.g. ``16,32,64``; returned as given (the caller splits)."""
    parts = str(s).split(",")
    if not all(p.strip().isdigit() and int(p) > 0 for p in parts):
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers, got {s}")
    return str(s)


def json_weights(s: str) -> str:
    """A JSON object of non-negative numbers, e.g. ``{"pix": 100}``; returned as given."""
    try:
        d = json.loads(s)
    except json.JSONDecodeError as e:
        raise argparse.ArgumentTypeError(f"must be a JSON object, got {s} ({e.msg})") from None
    if not isinstance(d, dict) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) and v >= 0 for v in d.values()):
        raise argparse.ArgumentTypeError(f"must be a JSON object of non-negative numbers, got {s}")
    return s


def device_name(s: str) -> str:
    """A torch device name: ``cpu``, ``cuda``, ``cuda:N`` or ``mps`` (availability is torch's to check)."""
    if not re.fullmatch(r"cpu|cuda(:\d+)?|mps", s):
        raise argparse.ArgumentTypeError(f"must be cpu, cuda, cuda:N or mps, got {s}")
    return s


def existing_file(s: str) -> str:
    """A path to an existing, readable file (weights to load)."""
    try:
        readable_file(s)
    except PathError as e:
        raise argparse.ArgumentTypeError(f"{e}: {s}") from None
    return s


def readable_file(path: str | Path) -> Path:
    """``path`` as a Path if it is an existing readable file, else :class:`PathError` with the reason."""
    p = Path(path).expanduser()
    if not p.exists():
        raise PathError("no such file")
    if not p.is_file():
        raise PathError("not a file")
    if not os.access(p, os.R_OK):
        raise PathError("not readable")
    return p


def writable_dir(path: str | Path) -> Path:
    """Create folder ``path`` (with parents) if needed and check that a file can be written in it
    (a probe file is created and removed); :class:`PathError` with the reason otherwise."""
    p = Path(path).expanduser()
    if p.exists() and not p.is_dir():
        raise PathError("exists and is not a folder")
    try:
        p.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(prefix=".qmri-write-probe-", dir=p):
            pass
    except FileExistsError:
        raise PathError("a parent exists and is not a folder") from None
    except OSError as e:
        raise PathError(e.strerror or str(e)) from None
    return p


def writable_file(path: str | Path) -> Path:
    """Check that file ``path`` can be written: its folder via :func:`writable_dir`, and ``path``
    itself is not a folder."""
    p = Path(path).expanduser()
    if p.is_dir():
        raise PathError("is a folder, expected a file path")
    try:
        writable_dir(p.parent)
    except PathError as e:
        raise PathError(f"its folder {p.parent}: {e}") from None
    return p


def add_training_arguments(
    p: argparse.ArgumentParser, out_help: str, train_subjects: int, val_subjects: int, epochs: int, steps: int, batch: int, train_help: str | None = None, val_help: str | None = None, batch_help: str | None = None
) -> argparse.ArgumentParser:
    """The options every ``qmri train <task>`` has, with that task's defaults: --out, --train-subjects,
    --val-subjects, --epochs, --steps, --batch, --seed and --device."""
    p.add_argument("--out", default=None, help=out_help)
    p.add_argument("--train-subjects", type=positive_int, default=train_subjects, help=train_help)
    p.add_argument("--val-subjects", type=positive_int, default=val_subjects, help=val_help)
    p.add_argument("--epochs", type=positive_int, default=epochs)
    p.add_argument("--steps", type=positive_int, default=steps, help="optimiser steps per epoch")
    p.add_argument("--batch", type=positive_int, default=batch, help=batch_help)
    p.add_argument("--seed", type=nonneg_int, default=0)
    p.add_argument("--device", type=device_name, default=None, help="cpu or cuda (default: cuda when available)")
    return p
