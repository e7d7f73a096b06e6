"""Would a trainer learn from this study? The check the server runs before it stores a training case.

Each trainer reads the datastore's (image, ``labels/final``) pairs with its task's reader and skips
what does not fit (another task's sidecar, anisotropic voxels, a wrong channel layout), logging why.
A case sent for training and then silently skipped is lost work, so the server runs the same reader
on a case declared for training (``PUT /datastore/label`` with ``{"train_for": TASK}``) and refuses
it with the reason.
"""

from __future__ import annotations

import logging
from pathlib import Path

#: Sidecar ``task`` values a trainer learns from -> the trainer's reader (module, function).
TRAINING_TASKS = {
    "qsm": ("qmri.models.qsmnet.data_datastore", "volumes_from_studies"),
    "oef": ("qmri.models.oefnet.data", "volumes_from_studies"),
    "pvc": ("qmri.models.pvcnet.data", "volumes_from_studies"),
    "synthetic_ct": ("qmri.models.synthnet.data", "volumes_from_studies"),
    "synthetic_mr": ("qmri.models.synthnet.data", "volumes_from_studies"),
}


class _Reasons(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages: list[str] = []

    def emit(self, record):
        self.messages.append(record.getMessage())


def check_training_case(task: str, image: str | Path, label: str | Path) -> None:
    """ValueError naming why the ``task`` trainer would not learn from (``image``, ``label``)."""
    import importlib

    from ..io.study import read_sidecar

    if task not in TRAINING_TASKS:
        raise ValueError(f"no trainer learns from '{str(task)[:40]}' studies; training tasks: {', '.join(TRAINING_TASKS)}")
    try:
        meta = read_sidecar(image)
    except ValueError as e:
        raise ValueError(f'the study has no usable sidecar ({e}): upload the image again with its sidecar, including "task": "{task}"') from None
    if meta.get("task") != task:
        named = f"names task {meta['task']!r}" if "task" in meta else "names no task"
        raise ValueError(f'the study\'s sidecar {named}, so the {task} trainer would skip it: upload the image again (overwrite) with "task": "{task}" in its sidecar')
    module, fn = TRAINING_TASKS[task]
    reader = getattr(importlib.import_module(module), fn)
    reasons = _Reasons()
    root = logging.getLogger("qmri")
    root.addHandler(reasons)
    try:
        volumes = reader([(str(image), str(label))])
    except ValueError as e:
        raise ValueError(f"the {task} trainer cannot read this case: {e}") from None
    finally:
        root.removeHandler(reasons)
    if not volumes:
        why = "; ".join(reasons.messages) or "its data do not fit the task's layout"
        raise ValueError(f"the {task} trainer would skip this case: {why}")
