"""Train QSMnet on phantoms (``qmri train qsm``); the MONAI Label trainer calls the same function.

Data: brain susceptibility of phantom subjects (seeds listed; validation subjects never trained on),
local fields by dipole convolution with zero padding plus 0.001 ppm noise, each epoch a fresh
rotation of every training brain by up to +-30 degrees relative to B0 (seed 003's augmentation),
random 32^3 patches at 2 mm (QSMnet's 64^3 at 1 mm field of view) with at least 30 % brain.
Optimiser: Adam (lr 1e-3, QSMnet's) with cosine decay; loss :class:`~qmri.models.qsmnet.loss.QSMnetLoss`.
The best epoch by validation NRMSE (whole-volume inference) is saved. The epoch loop, DDP and
checkpointing are :mod:`qmri.training.loop`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ...classical.qsm import nrmse  # noqa: F401  (demeaned NRMSE; also imported from here by tests)
from .loss import QSMnetLoss
from .predict import predict_chi
from .net import CHI_SCALE, DEFAULT_FEATURES, FIELD_SCALE, qsmnet
from ...training import loop
from .data import QSMVolume, local_field, make_volume, rotated_example, sample_patches
from .data_randomised import BaseBrain, base_brain, random_example

RANDOM_VAL_PATCHES = 24  # fixed randomised validation patches (from the validation subjects)


class QSMRecipe:
    """QSMnet on rotated phantom brains (see the module docstring).

    With ``randomised`` > 0 that fraction of every batch comes from domain-randomised examples
    (:mod:`qmri.models.qsmnet.data_randomised`) drawn from ``bases`` (training) and the selection metric
    ``val_nrmse`` becomes the mean of the whole-brain validation NRMSE and the NRMSE over fixed
    randomised patches of ``vbases`` (both also reported on their own), so that the kept epoch is
    not the one that fits the project's own simulator best.
    """

    name = "qsmnet"
    metric = "val_nrmse"

    def __init__(self, vols: Sequence[QSMVolume], vvols: Sequence[QSMVolume], patch: int = 32, features=DEFAULT_FEATURES, randomised: float = 0.0, bases: Sequence[BaseBrain] = (), vbases: Sequence[BaseBrain] = ()):
        self.vols, self.vvols, self.patch, self.features = list(vols), list(vvols), patch, tuple(features)
        self.randomised, self.bases = float(randomised), list(bases)
        if self.randomised > 0 and not (self.bases and vbases):
            raise ValueError("randomised training needs base brains for training and validation")
        self.val_fields = [local_field(v.chi, v.mask, v.voxel_size_mm, rng=np.random.default_rng(10_000 + i)) for i, v in enumerate(self.vvols)]
        vrng = np.random.default_rng(11_000)
        self.val_random = [random_example(vbases[i % len(vbases)], vrng, patch)[:3] for i in range(RANDOM_VAL_PATCHES)] if self.randomised > 0 else []
        self.loss_fn = QSMnetLoss(voxel_size_mm=self.vols[0].voxel_size_mm)

    def build(self) -> torch.nn.Module:
        return qsmnet(self.features)

    def config(self) -> dict:
        return {
            "features": list(self.features),
            "field_scale": FIELD_SCALE,
            "chi_scale": CHI_SCALE,
            "voxel_size_mm": self.vols[0].voxel_size_mm,
            "patch": self.patch,
            "b0_dir_trained": [0.0, 0.0, 1.0],
            "train_subjects": [v.subject for v in self.vols],
            "val_subjects": [v.subject for v in self.vvols],
            "randomised_fraction": self.randomised,
            "randomised_subjects": [b.subject for b in self.bases],
        }

    def batches(self, rng: np.random.Generator, steps: int, batch_size: int):
        pool = []
        for v in self.vols:
            f, c, m = rotated_example(v, rng)
            pool += sample_patches(f, c, m, max(1, steps * batch_size // len(self.vols)), self.patch, rng)
        order = rng.permutation(len(pool))
        for step in range(steps):
            start = (step * batch_size) % len(pool)
            idx = order[start : start + batch_size]
            if len(idx) < batch_size:
                idx = rng.choice(len(pool), batch_size)
            items = [pool[i] for i in idx]
            for j in range(batch_size):  # replace a `randomised` fraction with domain-randomised examples
                if rng.random() < self.randomised:
                    items[j] = random_example(self.bases[int(rng.integers(len(self.bases)))], rng, self.patch)[:3]
            yield {k: np.stack([it[j] for it in items])[:, None].astype(np.float32) for j, k in enumerate(("field", "chi", "mask"))}

    def loss(self, model, batch: dict, device) -> torch.Tensor:
        m = batch["mask"]
        pred = model(batch["field"] * FIELD_SCALE) / CHI_SCALE * m
        return self.loss_fn(pred, batch["chi"], m)[0]

    def validate(self, net, device) -> dict:
        vn = float(np.mean([nrmse(predict_chi(net, fld, v.mask, (v.voxel_size_mm,) * 3, device=device, refine_iterations=0), v.chi, v.mask) for v, fld in zip(self.vvols, self.val_fields)]))
        if not self.val_random:
            return {"val_nrmse": vn}
        rn = []
        for f, c, m in self.val_random:  # patches are already a multiple of 16
            with torch.no_grad():
                y = net(torch.from_numpy(f[None, None] * FIELD_SCALE).float().to(device))[0, 0].cpu().numpy() / CHI_SCALE
            rn.append(nrmse(np.where(m, y, 0.0), c, m))
        rv = float(np.mean(rn))
        return {"val_nrmse": 0.5 * (vn + rv), "val_nrmse_brain": vn, "val_nrmse_randomised": rv}


def train_qsm(
    out_path: str | Path,
    train: Sequence[int] | Sequence[QSMVolume],
    val: Sequence[int] | Sequence[QSMVolume],
    resolution_mm: float = 2.0,
    patch: int = 32,
    features=DEFAULT_FEATURES,
    randomised: float = 0.0,
    random_train: Sequence[int] = (),
    random_val: Sequence[int] = (),
    **options,
) -> dict:
    """Train and save the best weights to ``out_path``; returns :func:`qmri.training.loop.train`'s result.

    ``train``/``val`` are phantom seeds or ready :class:`QSMVolume` s (e.g. from datastore studies).
    ``options`` go to :func:`qmri.training.loop.train` (``init`` fine-tunes, ``world_size > 1`` is data
    parallel, ...); QSMnet's defaults: 20 epochs of 40 steps, batch 4, Adam lr 1e-3.
    """
    progress = options.get("progress", True)
    vols = [v if isinstance(v, QSMVolume) else make_volume(int(v), resolution_mm) for v in tqdm(list(train), desc="training brains", disable=not progress)]
    vvols = [v if isinstance(v, QSMVolume) else make_volume(int(v), resolution_mm) for v in tqdm(list(val), desc="validation brains", disable=not progress)]
    bases = [base_brain(int(sd)) for sd in tqdm(list(random_train) if randomised > 0 else [], desc="randomised base brains", disable=not progress)]
    vbases = [base_brain(int(sd)) for sd in (list(random_val) if randomised > 0 else [])]
    options = {"epochs": 20, "steps_per_epoch": 40, "batch_size": 4, "lr": 1e-3, **options}
    return loop.train(QSMRecipe(vols, vvols, patch, features, randomised, bases, vbases), out_path, **options)


def save_training_curve(history: list[dict], path: str | Path) -> Path:
    return loop.save_training_curve(history, path, "QSMnet loss (L1 + 0.5 model + 0.1 gradient)", "val_nrmse", "NRMSE (whole brain)", "training loss (ppm)")
