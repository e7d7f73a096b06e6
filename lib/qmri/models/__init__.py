"""The shipped networks: one package per network, and the registry every caller iterates over.

``qmri.models.<network>`` holds everything that is that network's own, one module per role:

- ``net``: the architecture(s) (``torch.nn.Module``); ``loss`` where it has its own loss;
- ``predict``: loading its checkpoint and running it on a volume (what the infer tasks call);
- ``data``: its training examples from phantoms (and variants such as ``data_randomised``);
- ``train``: its recipe for the one training loop (:func:`qmri.training.loop.train`);
- ``cli``: the options and defaults of ``qmri train <task>`` (torch-free, so ``--help`` is fast);
- ``fine_tune``: what the MONAI Label app's one trainer (``apps/qmri/lib/trainers/network.py``)
  takes from it to fine-tune on datastore studies;
- ``recipes/*.json``: its replayable trainings and the server trainer's defaults
  (:mod:`qmri.training.replay`).

Its weights and model card (``metadata.json``, ``README.md``, ``NOTES.md``) live in the app's model
folder (:func:`qmri.paths.model_dir`, ``$QMRI_MODEL_DIR``), which a deployment replaces without
touching code. Physics, classical methods, phantoms, the infer tasks (``qmri.tasks``) and the
benches (``qmri.bench``) are shared by several networks and stay in their own packages.

:data:`MODELS` names each network's roles, tasks, weights and recipes; ``qmri models`` prints it with
the weights' version and sha256, the app's configs build each trainer from it, and
``tests/test_models.py`` imports every module it names and loads every weights file. Module names
are strings (imported only when asked), so reading the table costs nothing.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from pathlib import Path

from ..paths import model_dir as default_model_dir

#: Roles every network package has (see the module docstring).
COMMON_ROLES = ("net", "predict", "data", "train", "cli", "fine_tune")


@dataclass(frozen=True)
class ModelSpec:
    """One shipped network (a checkpoint family): its package ``qmri.models.<name>``.

    ``weights``: files relative to the model folder (one per variant; the first is the default).
    ``extra_roles``: the package's modules beyond :data:`COMMON_ROLES`. ``task`` / ``bench``: the
    shared infer-task and bench modules that use it.
    """

    name: str
    description: str
    tasks: tuple[str, ...]
    weights: tuple[str, ...]
    recipes: tuple[str, ...]
    train_command: str
    task: str
    bench: str
    extra_roles: tuple[str, ...] = ()

    @property
    def train_task(self) -> str:
        """The ``qmri train`` task that trains it (``qsm``, ``pvc``, ``synth``, ``oef``)."""
        return self.train_command.split()[-1]

    @property
    def package(self) -> str:
        return f"{__name__}.{self.name}"

    @property
    def modules(self) -> dict[str, str]:
        """Role -> module name: the package's own roles, then ``task`` and ``bench``."""
        own = {r: f"{self.package}.{r}" for r in (*COMMON_ROLES, *self.extra_roles)}
        return {**own, "task": self.task, "bench": self.bench}

    def weights_paths(self, model_dir: str | Path | None = None) -> list[Path]:
        root = Path(model_dir) if model_dir is not None else default_model_dir()
        return [root / w for w in self.weights]

    def card_dir(self, model_dir: str | Path | None = None) -> Path:
        """The folder of the model card (``metadata.json``, ``README.md``, ``NOTES.md``)."""
        return self.weights_paths(model_dir)[0].parent

    def module(self, role: str):
        """Import and return the module playing ``role``."""
        if role not in self.modules:
            raise ValueError(f"network {self.name} has no module for role {role!r}; roles: {', '.join(self.modules)}")
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
            task="qmri.tasks.qsm",
            bench="qmri.bench.qsm",
            extra_roles=("loss", "data_randomised", "data_datastore"),
        ),
        ModelSpec(
            name="pvcnet",
            description="PET-only partial-volume correction: residual MONAI UNet (SUV -> SUV); pvcnet_fwhm also takes the PSF FWHM (mm)",
            tasks=("pvc",),
            weights=("pvcnet_fwhm/pvcnet_fwhm.pt", "pvcnet/pvcnet.pt"),
            recipes=("pvcnet_fwhm", "pvcnet"),
            train_command="qmri train pvc",
            task="qmri.tasks.pvc",
            bench="qmri.bench.pvc",
            extra_roles=("data_randomised",),
        ),
        ModelSpec(
            name="synthnet",
            description="scCycleGAN: two ResNet generators (T2w MR <-> CT in HU) and two PatchDiscriminators in one checkpoint",
            tasks=("synthetic_ct", "synthetic_mr"),
            weights=("synthnet/synthnet.pt",),
            recipes=("synthnet",),
            train_command="qmri train synth",
            task="qmri.tasks.synthesis",
            bench="qmri.bench.synth",
            extra_roles=("loss", "targets", "data_randomised"),
        ),
        ModelSpec(
            name="oefnet",
            description="OEF networks on 8-echo GRE magnitude + QSM: best (set-context, with OEF_sd), cnn3d and lstm (the seed's)",
            tasks=("oef",),
            weights=("oefnet/best.pt", "oefnet/cnn3d.pt", "oefnet/lstm.pt"),
            recipes=("oef_best", "oef_cnn3d", "oef_lstm"),
            train_command="qmri train oef",
            task="qmri.tasks.oef",
            bench="qmri.bench.oef",
            extra_roles=("convention", "pyramid", "net_context", "net_seed"),
        ),
    )
}


def shipped(name: str, model_dir: str | Path | None = None) -> Path:
    """A shipped weights file by its variant's name (the file's stem: ``qsmnet``, ``pvcnet``,
    ``pvcnet_fwhm``, ``synthnet``, ``best``, ``cnn3d``, ``lstm``), or by a network's name the folder
    of its variants when it has several in one folder (``oefnet``); under ``model_dir`` (default
    :func:`qmri.paths.model_dir`)."""
    root = Path(model_dir) if model_dir is not None else default_model_dir()
    variants = {Path(w).stem: w for m in MODELS.values() for w in m.weights}
    if name in variants:
        return root / variants[name]
    if name in MODELS and len({Path(w).parent for w in MODELS[name].weights}) == 1:
        return root / Path(MODELS[name].weights[0]).parent
    raise ValueError(f"unknown network {name!r}; choose from {', '.join([*variants, *(n for n in MODELS if n not in variants)])}")


def for_task(task: str) -> list[ModelSpec]:
    """The networks serving infer task ``task`` (empty for a task with none)."""
    return [m for m in MODELS.values() if task in m.tasks]


def table(model_dir: str | Path | None = None) -> list[dict]:
    """One row per weights file: network, tasks, file, version, sha256 (None when absent), recipe."""
    from ..networks.weights import weights_identity
    from ..training import model_card

    rows = []
    for m in MODELS.values():
        for path, recipe in zip(m.weights_paths(model_dir), m.recipes):
            ident = weights_identity(path) or {}
            meta = (model_card.load(path.parent) or {}).get("models", {}).get(path.name, {})
            rows.append({"network": m.name, "tasks": ", ".join(m.tasks), "weights": str(path), "version": meta.get("version"), "sha256": ident.get("sha256"), "recipe": recipe, "train": m.train_command})
    return rows
