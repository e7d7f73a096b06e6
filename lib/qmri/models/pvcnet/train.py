"""Train the PET PVC network on phantoms (``qmri train pvc``); the MONAI Label trainer calls the same function.

Data (:mod:`qmri.models.pvcnet.data`): each epoch every training subject gets a new PET (FWHM uniform
in 5-8 mm, new noise, random amyloid status) and its RBV target with the true PSF; random cubic
patches (64^3 at 2 mm = the seed's 128^3 at 1 mm field of view, or smaller) with random flips.
Intensities: per-subject min-max scaling clipped at the 99th percentile of the PET; the target is
scaled with the PET's (lo, hi) and not clipped. With ``condition_fwhm`` the PSF FWHM is a second
input channel (:func:`qmri.models.pvcnet.net.fwhm_channel`). Loss MSE, optimiser Adam (seed 002) with
cosine decay. Validation: whole-volume inference on held-out subjects at FWHM 5, 6.5 and 8 mm; the
epoch with the lowest mean RMSE ratio (network vs input, against the target, in the brain) is
saved. The epoch loop, DDP and checkpointing are :mod:`qmri.training.loop`'s.
"""

from __future__ import annotations

from concurrent.futures import ProcessPoolExecutor
from functools import partial
from pathlib import Path
from typing import Sequence

import numpy as np
import torch
from tqdm import tqdm

from .predict import predict_pvc
from .net import DEFAULT_CHANNELS, DEFAULT_STRIDES, Scaling, fwhm_channel, pvcnet
from ...training import loop
from .data import PVCVolume, draw_example, make_volume, sample_patches, validation_examples
from .data_randomised import FWHM_RANGE_MM as RANDOM_FWHM_RANGE_MM
from .data_randomised import random_example

RANDOM_VAL_EXAMPLES = 2  # fixed randomised validation examples per validation subject
RANDOM_VAL_SEED = 31_500


def rmse(est: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> float:
    """Root-mean-square error in the units of ``ref`` (SUV) inside ``mask``."""
    return float(np.sqrt(np.mean((np.asarray(est, np.float64) - ref)[mask] ** 2)))


class PVCRecipe:
    """The PET-only PVC network (optionally FWHM-conditioned) on phantom or study PET volumes."""

    name = "pvcnet"
    metric = "val_ratio"

    def __init__(
        self,
        vols: Sequence[PVCVolume],
        vvols: Sequence[PVCVolume],
        patch: int = 64,
        channels=DEFAULT_CHANNELS,
        strides=DEFAULT_STRIDES,
        target: str = "rbv",
        condition_fwhm: bool = False,
        residual: str = "additive",
        randomised: float = 0.0,
    ):
        self.vols, self.vvols = list(vols), list(vvols)
        self.residual = residual
        self.patch, self.channels, self.strides, self.target = patch, tuple(channels), tuple(strides), target
        self.in_channels = 2 if condition_fwhm else 1
        self.val_examples = validation_examples(self.vvols, target)
        if not 0.0 <= float(randomised) <= 1.0:
            raise ValueError(f"randomised must be a fraction in [0, 1], got {randomised}")
        self.randomised = float(randomised)
        phantoms = [v for v in self.vvols if v.is_phantom]
        if self.randomised > 0 and not phantoms:
            raise ValueError("randomised examples need phantom validation subjects")
        vrng = np.random.default_rng(RANDOM_VAL_SEED)
        # fixed randomised validation examples, so the kept epoch also generalises beyond the phantom generator
        self.val_random = [(v, *random_example(v, vrng, target)) for v in phantoms for _ in range(RANDOM_VAL_EXAMPLES)] if self.randomised > 0 else []
        self.loss_fn = torch.nn.MSELoss()

    def build(self) -> torch.nn.Module:
        return pvcnet(self.channels, self.strides, in_channels=self.in_channels, residual=self.residual)

    def config(self) -> dict:
        return {
            "architecture": f"MONAI UNet, residual units, global {self.residual} residual with ReZero gain",
            "residual": self.residual,
            "channels": list(self.channels),
            "strides": list(self.strides),
            "num_res_units": 2,
            "norm": "instance",
            "in_channels": self.in_channels,
            "fwhm_conditioned": self.in_channels == 2,
            "scaling": "per-subject min-max, clipped at the 99th percentile; output mapped back to input units",
            "target": self.target,
            "voxel_size_mm": self.vols[0].voxel_size_mm,
            "patch": self.patch,
            "fwhm_range_mm": list(RANDOM_FWHM_RANGE_MM) if self.randomised > 0 else [5.0, 8.0],
            "randomised_fraction": self.randomised,
            "train_subjects": [v.subject for v in self.vols],
            "val_subjects": [v.subject for v in self.vvols],
        }

    def batches(self, rng: np.random.Generator, steps: int, batch_size: int):
        pool = []
        per_vol = max(1, int(np.ceil(steps * batch_size / len(self.vols))))
        for v in self.vols:
            if v.is_phantom and rng.random() < self.randomised:  # a domain-randomised example of this anatomy
                pet, tgt, fwhm = random_example(v, rng, self.target)
            else:
                pet, tgt, fwhm = draw_example(v, rng, self.target)
            sc = Scaling.of(pet)
            pool += [(p, t, fwhm) for p, t in sample_patches(sc.normalise(pet), sc.normalise(tgt, clip=False), v.mask, per_vol, self.patch, rng)]
        order = rng.permutation(len(pool))
        for step in range(steps):
            start = (step * batch_size) % len(pool)
            idx = order[start : start + batch_size]
            if len(idx) < batch_size:
                idx = rng.choice(len(pool), batch_size)
            x = np.stack([pool[i][0] for i in idx])[:, None].astype(np.float32)
            if self.in_channels == 2:
                x = np.concatenate([x, np.stack([fwhm_channel(pool[i][0].shape, pool[i][2]) for i in idx])[:, None]], axis=1)
            yield {"x": x, "y": np.stack([pool[i][1] for i in idx])[:, None].astype(np.float32)}

    def loss(self, model, batch: dict, device) -> torch.Tensor:
        return self.loss_fn(model(batch["x"]), batch["y"])

    def validate(self, net, device) -> dict:
        """Mean RMSE (SUV, brain) of the network and of the input against the target, and their ratio;
        with randomised training, ``val_ratio`` is the mean of the phantom and the randomised examples' ratios."""

        def errors(examples):
            e_net = [rmse(predict_pvc(net, pet, fwhm_mm=fwhm, device=device), tgt, v.mask) for v, pet, tgt, fwhm in examples]
            e_in = [rmse(pet, tgt, v.mask) for v, pet, tgt, fwhm in examples]
            return float(np.mean(e_net)), float(np.mean(e_in)), float(np.mean(np.array(e_net) / np.array(e_in)))

        e_net, e_in, ratio = errors(self.val_examples)
        out = {"val_rmse": e_net, "val_rmse_input": e_in, "val_ratio": ratio}
        if self.val_random:
            out["val_ratio_phantoms"] = ratio
            out["val_ratio_randomised"] = errors(self.val_random)[2]
            out["val_ratio"] = 0.5 * (ratio + out["val_ratio_randomised"])
        return out


def train_pvc(
    out_path: str | Path,
    train: Sequence[int] | Sequence[PVCVolume],
    val: Sequence[int] | Sequence[PVCVolume],
    resolution_mm: float = 2.0,
    patch: int = 64,
    channels=DEFAULT_CHANNELS,
    strides=DEFAULT_STRIDES,
    target: str = "rbv",
    condition_fwhm: bool = False,
    workers: int = 1,
    residual: str = "additive",
    randomised: float = 0.0,
    **options,
) -> dict:
    """Train and save the best weights to ``out_path``; returns :func:`qmri.training.loop.train`'s result.

    ``train``/``val``: phantom seeds or ready :class:`PVCVolume` s (e.g. from datastore studies).
    ``target``: ``"rbv"`` (default) or ``"activity"`` (true activity / ``labels/final``).
    ``condition_fwhm``: give the network the PSF FWHM as a second channel. ``residual``: how the
    U-Net's output meets the input (:class:`~qmri.models.pvcnet.net.PVCNet`). ``randomised``: the
    fraction of phantom examples drawn domain-randomised (:mod:`qmri.models.pvcnet.data_randomised`).
    ``options`` go to
    :func:`qmri.training.loop.train` (``init`` fine-tunes, ``max_minutes`` stops after the epoch
    that passes that wall time, ...); defaults: 20 epochs of 50 steps, batch 2, Adam lr 1e-3.
    """
    progress = options.get("progress", True)
    vols = _volumes(train, resolution_mm, workers, "training subjects", progress)
    vvols = _volumes(val, resolution_mm, workers, "validation subjects", progress)
    options = {"epochs": 20, "steps_per_epoch": 50, "batch_size": 2, "lr": 1e-3, **options}
    return loop.train(PVCRecipe(vols, vvols, patch, channels, strides, target, condition_fwhm, residual, randomised), out_path, **options)


def _volumes(items, resolution_mm: float, workers: int, desc: str, progress: bool) -> list[PVCVolume]:
    """Ready volumes pass through; seeds become phantoms, in ``workers`` processes when > 1."""
    items = list(items)
    seeds = [int(v) for v in items if not isinstance(v, PVCVolume)]
    make = partial(make_volume, resolution_mm=resolution_mm)
    if workers > 1 and len(seeds) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(seeds))) as pool:
            made = list(tqdm(pool.map(make, seeds), total=len(seeds), desc=desc, disable=not progress))
    else:
        made = [make(s) for s in tqdm(seeds, desc=desc, disable=not progress)]
    it = iter(made)
    return [v if isinstance(v, PVCVolume) else next(it) for v in items]


def save_training_curve(history: list[dict], path: str | Path) -> Path:
    return loop.save_training_curve(history, path, "PVC network loss", "val_ratio", "RMSE network / RMSE input", "training MSE (scaled units)")
