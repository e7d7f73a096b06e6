"""Every shipped network in one table: where its code, weights, recipe and card are.

A newcomer following one network starts here. Each :class:`ModelSpec` names the modules that make
up the network (definition, inference, training data, training recipe, command-line options, bench,
the MONAI Label trainer adapter), the infer tasks that serve it, its weights under the model folder
(:func:`qmri.paths.model_dir`) and its replayable recipes. ``qmri models`` prints the table with the
weights' version and sha256; ``tests/test_models.py`` checks that every module named here imports,
every weights file loads and every card and recipe exists, so the table cannot go stale.

Module names are strings (imported only when asked), so reading the table costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass, field
from pathlib import Path

from .paths import model_dir as default_model_dir


@dataclass(frozen=True)
class ModelSpec:
    """One shipped network (a checkpoint family) and the modules that make it.

    ``weights``: files relative to the model folder (one per variant; the first is the default).
    ``modules``: role -> module (``net``, ``predict``, ``data``, ``train``, ``cli``, ``bench``,
    ``trainer``); ``trainer`` lives in the app (``apps/qmri/lib/trainers``), the rest in ``qmri``.
    """

    name: str
    description: str
    tasks: tuple[str, ...]
    weights: tuple[str, ...]
    recipes: tuple[str, ...]
    train_command: str
    modules: dict[str, str] = field(default_factory=dict)

    def weights_paths(self, model_dir: str | Path | None = None) -> list[Path]:
        root = Path(model_dir) if model_dir is not None else default_model_dir()
        return [root / w for w in self.weights]

    def card_dir(self, model_dir: str | Path | None = None) -> Path:
        """The folder of the model card (``metadata.json``, ``README.md``, ``NOTES.md``)."""
        return self.weights_paths(model_dir)[0].parent

    def module(self, role: str):
        """Import and return the module playing ``role`` (not the app's ``trainer``)."""
        if role == "trainer":
            raise ValueError("the trainer adapter lives in the MONAI Label app (apps/qmri/lib/trainers), not in qmri")
        return importlib.import_module(self.modules[role])


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec(
            name="qsmnet",
            description="QSMnet+ 3D U-Net: local field (ppm) -> susceptibility (ppm), with a data-consistency step when served",
            tasks=("qsm", "qsm_raw"),
            weights=("qsmnet/qsmnet.pt",),
            recipes=("qsmnet",),
            train_command="qmri train qsm",
            modules={
                "net": "qmri.networks.qsmnet",
                "loss": "qmri.networks.qsm_loss",
                "predict": "qmri.networks.qsm_predict",
                "data": "qmri.training.qsm_data",
                "data_randomised": "qmri.training.qsm_random",
                "data_datastore": "qmri.training.qsm_datastore",
                "train": "qmri.training.qsm_train",
                "cli": "qmri.training.qsm_cli",
                "task": "qmri.tasks.qsm",
                "bench": "qmri.bench.qsm",
                "trainer": "apps/qmri/lib/trainers/qsmnet.py",
            },
        ),
        ModelSpec(
            name="pvcnet",
            description="PET-only partial-volume correction: residual MONAI UNet (SUV -> SUV); pvcnet_fwhm also takes the PSF FWHM (mm)",
            tasks=("pvc",),
            weights=("pvcnet_fwhm/pvcnet_fwhm.pt", "pvcnet/pvcnet.pt"),
            recipes=("pvcnet_fwhm", "pvcnet"),
            train_command="qmri train pvc",
            modules={
                "net": "qmri.networks.pvcnet",
                "predict": "qmri.networks.pvc_predict",
                "data": "qmri.training.pvc_data",
                "train": "qmri.training.pvc_train",
                "cli": "qmri.training.pvc_cli",
                "task": "qmri.tasks.pvc",
                "bench": "qmri.bench.pvc",
                "trainer": "apps/qmri/lib/trainers/pvcnet.py",
            },
        ),
        ModelSpec(
            name="synthnet",
            description="scCycleGAN: two ResNet generators (T2w MR <-> CT in HU) and two PatchDiscriminators in one checkpoint",
            tasks=("synthetic_ct", "synthetic_mr"),
            weights=("synthnet/synthnet.pt",),
            recipes=("synthnet",),
            train_command="qmri train synth",
            modules={
                "net": "qmri.networks.synth_nets",
                "loss": "qmri.networks.sc_loss",
                "predict": "qmri.networks.synth_predict",
                "data": "qmri.training.synth_data",
                "targets": "qmri.training.synth_targets",
                "train": "qmri.training.synth_train",
                "cli": "qmri.training.synth_cli",
                "task": "qmri.tasks.synthesis",
                "bench": "qmri.bench.synth",
                "trainer": "apps/qmri/lib/trainers/synthnet.py",
            },
        ),
        ModelSpec(
            name="oefnet",
            description="OEF networks on 8-echo GRE magnitude + QSM: best (set-context, with OEF_sd), cnn3d and lstm (the seed's)",
            tasks=("oef",),
            weights=("oefnet/best.pt", "oefnet/cnn3d.pt", "oefnet/lstm.pt"),
            recipes=("oef_best", "oef_cnn3d", "oef_lstm"),
            train_command="qmri train oef",
            modules={
                "net": "qmri.networks.oef_nets",
                "net_context": "qmri.networks.oef_context",
                "net_seed": "qmri.networks.oef_seed_nets",
                "predict": "qmri.networks.oef_predict",
                "data": "qmri.training.oef_data",
                "train": "qmri.training.oef_train",
                "cli": "qmri.training.oef_cli",
                "task": "qmri.tasks.oef",
                "bench": "qmri.bench.oef",
                "trainer": "apps/qmri/lib/trainers/oefnet.py",
            },
        ),
    )
}


def for_task(task: str) -> list[ModelSpec]:
    """The networks serving infer task ``task`` (empty for a task with none)."""
    return [m for m in MODELS.values() if task in m.tasks]


def table(model_dir: str | Path | None = None) -> list[dict]:
    """One row per weights file: network, tasks, file, version, sha256 (None when absent), recipe."""
    from .tasks.registry import weights_identity
    from .training import model_card

    rows = []
    for m in MODELS.values():
        for path, recipe in zip(m.weights_paths(model_dir), m.recipes):
            ident = weights_identity(path) or {}
            meta = (model_card.load(path.parent) or {}).get("models", {}).get(path.name, {})
            rows.append({"network": m.name, "tasks": ", ".join(m.tasks), "weights": str(path), "version": meta.get("version"), "sha256": ident.get("sha256"), "recipe": recipe, "train": m.train_command})
    return rows
