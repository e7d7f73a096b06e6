"""Every infer task by name, with its network weights resolved from a model folder.

The one place that maps a task name to its :class:`~qmri.tasks.spec.TaskSpec` and weights files
under a model folder (the app's ``model_dir``; by default :func:`qmri.paths.model_dir`): the MONAI
Label app's configs and ``qmri infer`` both build their tasks from here, so the server and the
command line run the same validated code on the same weights.
"""

from __future__ import annotations

from pathlib import Path

from .spec import TaskSpec

TASKS = ("oef", "qsm", "qsm_raw", "pvc", "synthetic_ct", "synthetic_mr")


def weights(task: str, model_dir: str | Path | None = None):
    """The weights of ``task``'s networks under ``model_dir``, from the network registry
    (:data:`qmri.models.MODELS`): a path, or a dict variant -> path (oef: best, cnn3d, lstm; pvc: the
    default network first, the one the trainer trains unless asked)."""
    from ..models import for_task

    if task not in TASKS:
        raise ValueError(f"unknown task {task!r}; choose from {', '.join(TASKS)}")
    files = {Path(w).stem: p for m in for_task(task) for w, p in zip(m.weights, m.weights_paths(model_dir))}
    if len(files) == 1:
        return next(iter(files.values()))
    if task == "pvc":
        from .pvc import DEFAULT_NETWORK

        files = {DEFAULT_NETWORK: files[DEFAULT_NETWORK], **files}
    return files


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
