"""Every infer task by name, with its network weights resolved from a model folder.

The one place that maps a task name to its :class:`~qmri.tasks.spec.TaskSpec` and weights files
under a model folder (the app's ``model_dir``; by default :func:`qmri.paths.model_dir`): the MONAI
Label app's configs and ``qmri infer`` both build their tasks from here, so the server and the
command line run the same validated code on the same weights.
"""

from __future__ import annotations

from pathlib import Path

from ..paths import model_dir as default_model_dir
from .spec import TaskSpec

TASKS = ("oef", "qsm", "qsm_raw", "pvc", "synthetic_ct", "synthetic_mr")


def weights(task: str, model_dir: str | Path | None = None):
    """The weights of ``task``'s networks under ``model_dir``: a path, or a dict network -> path
    (oef: best, cnn3d, lstm; pvc: the default network first, the one the trainer trains unless asked)."""
    root = Path(model_dir) if model_dir is not None else default_model_dir()
    if task == "oef":
        from .oef import NETWORKS

        return {k: root / "oefnet" / f"{k}.pt" for k in NETWORKS}
    if task in ("qsm", "qsm_raw"):
        return root / "qsmnet" / "qsmnet.pt"
    if task == "pvc":
        from .pvc import DEFAULT_NETWORK, NETWORK_METHODS

        order = [DEFAULT_NETWORK] + [m for m in NETWORK_METHODS if m != DEFAULT_NETWORK]
        return {m: root / m / f"{m}.pt" for m in order}
    if task in ("synthetic_ct", "synthetic_mr"):
        return root / "synthnet" / "synthnet.pt"
    raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")


def task_spec(task: str, model_dir: str | Path | None = None) -> TaskSpec:
    """The :class:`TaskSpec` of ``task`` with its networks loaded (lazily) from ``model_dir``."""
    w = weights(task, model_dir)
    if task == "oef":
        from .oef import oef_spec

        return oef_spec(w)
    if task in ("qsm", "qsm_raw"):
        from .qsm import qsm_specs

        return qsm_specs(w)[task == "qsm_raw"]
    if task == "pvc":
        from .pvc import pvc_spec

        return pvc_spec(w)
    from .synthesis import synthesis_specs

    return synthesis_specs(w)[task == "synthetic_mr"]


def method_weights(task: str, method: str, model_dir: str | Path | None = None) -> Path | None:
    """The weights file ``method`` of ``task`` runs with, or None for a classical method."""
    w = weights(task, model_dir)
    if isinstance(w, dict):
        return w.get(method)
    from .synthesis import NETWORK

    return w if method in ("qsmnet", "qsmnet_direct", NETWORK) else None
