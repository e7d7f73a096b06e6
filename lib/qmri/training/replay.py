"""Replayable training recipes: each shipped network's training as one named file.

``lib/qmri/models/<network>/recipes/<name>.json`` (beside the network's code) holds ``{"network", "task", "description", "stages":
[{"args": [...], "note": ...}, ...]}``: the ``qmri train <task>`` options of each stage, exactly as
they were run. ``qmri train <task> --recipe <name or file>`` replays them: one stage trains to
``--out``; several stages chain, each fine-tuning the previous stage's best checkpoint (``--init``),
the intermediate ones written to ``--work`` (default: a folder beside ``--out``).
"""

from __future__ import annotations

import json
from pathlib import Path

#: The networks' packages; each keeps its recipes in ``recipes/`` (found by path, not imported).
MODELS_DIR = Path(__file__).parents[1] / "models"


def files() -> dict[str, Path]:
    """Shipped recipe name -> file (``models/<network>/recipes/<name>.json``)."""
    return {p.stem: p for p in sorted(MODELS_DIR.glob("*/recipes/*.json"))}


def names() -> list[str]:
    return sorted(files())


def load(name_or_path: str | Path) -> dict:
    """A recipe by name (one of :func:`names`) or path; ValueError naming the choices."""
    p = Path(name_or_path) if Path(name_or_path).suffix else files().get(str(name_or_path))
    if p is None or not p.is_file():
        raise ValueError(f"no recipe {str(name_or_path)!r}; shipped recipes: {', '.join(names())} (or a .json file)")
    try:
        r = json.loads(p.read_text())
    except json.JSONDecodeError as e:
        raise ValueError(f"recipe {p.name} is not valid JSON: {e}") from None
    if not isinstance(r, dict) or not isinstance(r.get("stages"), list) or not r["stages"] or not all(isinstance(s, dict) and isinstance(s.get("args"), list) for s in r["stages"]):
        raise ValueError(f"recipe {p.name} must be an object with a non-empty 'stages' list of {{'args': [...]}}")
    if r.get("task") not in ("qsm", "pvc", "synth", "oef"):
        raise ValueError(f"recipe {p.name} names no training task (qsm, pvc, synth, oef): {r.get('task')!r}")
    return r


def stage_argvs(recipe: dict, out: str | Path, work: str | Path, device: str | None = None) -> list[list[str]]:
    """The ``qmri train`` argument lists of every stage: stage i > 0 starts from stage i - 1's
    weights; the last writes ``out``, the others ``work/stage<i>`` (a file, or for oef a folder)."""
    task = recipe["task"]
    work = Path(work)
    argvs = []
    n = len(recipe["stages"])
    for i, stage in enumerate(recipe["stages"]):
        target = Path(out) if i == n - 1 else (work / f"stage{i}" if task == "oef" else work / f"stage{i}.pt")
        argv = ["train", task, *[str(a) for a in stage["args"]], "--out", str(target)]
        if i > 0:
            argv += ["--init", str(Path(argvs[-1][argvs[-1].index("--out") + 1]))]
        if device:
            argv += ["--device", device]
        argvs.append(argv)
    return argvs


#: Options every fine-tune section must give (the server trainer's common request parameters).
FINE_TUNE_KEYS = ("max_epochs", "steps_per_epoch", "batch_size", "lr")


def fine_tune(name: str) -> dict:
    """The ``fine_tune`` section of recipe ``name``: the defaults of the server's ``POST /train``
    for this network (fine-tuning the served weights on the datastore's studies), so the command
    line's recipe and the REST trainer read one file."""
    r = load(name)
    ft = r.get("fine_tune")
    if not isinstance(ft, dict) or any(k not in ft for k in FINE_TUNE_KEYS):
        raise ValueError(f"recipe {name} has no 'fine_tune' section with {', '.join(FINE_TUNE_KEYS)}")
    return dict(ft)
