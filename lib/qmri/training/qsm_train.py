"""Train QSMnet on phantoms (``qmri train qsm``); the MONAI Label trainer calls the same function.

Data: brain susceptibility of phantom subjects (seeds listed; validation subjects never trained on),
local fields by dipole convolution with zero padding plus 0.001 ppm noise, each epoch a fresh
rotation of every training brain by up to +-30 degrees relative to B0 (seed 003's augmentation),
random 32^3 patches at 2 mm (QSMnet's 64^3 at 1 mm field of view) with at least 30 % brain.
Optimiser: Adam (lr 1e-3, QSMnet's) with cosine decay; loss :class:`~qmri.networks.qsm_loss.QSMnetLoss`.
The best epoch by validation NRMSE (whole-volume inference) is saved. The epoch loop, DDP and
checkpointing are :mod:`qmri.training.loop`'s.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from ..classical.qsm import nrmse  # noqa: F401  (demeaned NRMSE; also imported from here by tests)
from ..networks.qsm_loss import QSMnetLoss
from ..networks.qsm_predict import predict_chi
from ..networks.qsmnet import CHI_SCALE, DEFAULT_FEATURES, FIELD_SCALE, qsmnet
from . import loop
from .qsm_data import QSMVolume, local_field, make_volume, rotated_example, sample_patches


class QSMRecipe:
    """QSMnet on rotated phantom brains (see the module docstring)."""

    name = "qsmnet"
    metric = "val_nrmse"

    def __init__(self, vols: Sequence[QSMVolume], vvols: Sequence[QSMVolume], patch: int = 32, features=DEFAULT_FEATURES):
        self.vols, self.vvols, self.patch, self.features = list(vols), list(vvols), patch, tuple(features)
        self.val_fields = [local_field(v.chi, v.mask, v.voxel_size_mm, rng=np.random.default_rng(10_000 + i)) for i, v in enumerate(self.vvols)]
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
            yield {k: np.stack([pool[i][j] for i in idx])[:, None].astype(np.float32) for j, k in enumerate(("field", "chi", "mask"))}

    def loss(self, model, batch: dict, device) -> torch.Tensor:
        m = batch["mask"]
        pred = model(batch["field"] * FIELD_SCALE) / CHI_SCALE * m
        return self.loss_fn(pred, batch["chi"], m)[0]

    def validate(self, net, device) -> dict:
        vn = [nrmse(predict_chi(net, fld, v.mask, (v.voxel_size_mm,) * 3, device=device, refine_iterations=0), v.chi, v.mask) for v, fld in zip(self.vvols, self.val_fields)]
        return {"val_nrmse": float(np.mean(vn))}


def train_qsm(
    out_path: str | Path,
    train: Sequence[int] | Sequence[QSMVolume],
    val: Sequence[int] | Sequence[QSMVolume],
    resolution_mm: float = 2.0,
    patch: int = 32,
    features=DEFAULT_FEATURES,
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
    options = {"epochs": 20, "steps_per_epoch": 40, "batch_size": 4, "lr": 1e-3, **options}
    return loop.train(QSMRecipe(vols, vvols, patch, features), out_path, **options)


def save_training_curve(history: list[dict], path: str | Path) -> Path:
    return loop.save_training_curve(history, path, "QSMnet loss (L1 + 0.5 model + 0.1 gradient)", "val_nrmse", "NRMSE (whole brain)", "training loss (ppm)")
