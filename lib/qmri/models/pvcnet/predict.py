"""Whole-volume inference of the PVC network, in the input's units."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...networks.checkpoint import load_checkpoint
from .net import DIVISOR, Scaling, fwhm_channel, pvcnet


def load_pvcnet(path: str | Path, device="cpu"):
    """Load weights saved by :func:`qmri.models.pvcnet.train.train_pvc` -> (network in eval mode, config)."""
    state, cfg = load_checkpoint(path, device)
    net = pvcnet(cfg["channels"], cfg["strides"], cfg.get("num_res_units", 2), cfg.get("norm", "instance"), cfg.get("in_channels", 1), cfg.get("residual", "additive")).to(device)
    net.load_state_dict(state)
    net.eval()
    return net, cfg


def _pad(x: np.ndarray, div: int):
    """Edge-pad each axis up to a multiple of ``div`` (symmetrically); returns the crop back."""
    pads = []
    for n in x.shape:
        extra = (-n) % div
        pads.append((extra // 2, extra - extra // 2))
    crop = tuple(slice(a, a + n) for (a, _), n in zip(pads, x.shape))
    return np.pad(x, pads, mode="edge"), crop


@torch.no_grad()
def predict_pvc(net, pet: np.ndarray, fwhm_mm: float | None = None, device=None) -> np.ndarray:
    """Partial-volume corrected PET (same units as ``pet``, e.g. SUV) from a 3D PET alone.

    ``fwhm_mm``: the scanner's PSF FWHM (mm); required by an FWHM-conditioned network, ignored otherwise.
    Per-subject min-max scaling with 99th-percentile clipping (:class:`~qmri.models.pvcnet.net.Scaling`),
    whole-volume inference (edge-padded to a multiple of 8), and the inverse scaling of the output.
    """
    pet = np.asarray(pet, dtype=np.float32)
    if pet.ndim != 3:
        raise ValueError(f"PET must be 3D (x,y,z), got shape {pet.shape}")
    if device is None:
        device = next(net.parameters()).device
    sc = Scaling.of(pet)
    x, crop = _pad(sc.normalise(pet).astype(np.float32), DIVISOR)
    x = x[None]
    if getattr(net, "in_channels", 1) == 2:
        if fwhm_mm is None:
            raise ValueError("this PVC network is conditioned on the PSF FWHM: give psf_fwhm_mm (mm)")
        x = np.concatenate([x, fwhm_channel(x.shape[1:], fwhm_mm)[None]])
    y = net(torch.from_numpy(x[None]).to(device))[0, 0].float().cpu().numpy()[crop]
    return sc.denormalise(y).astype(np.float32)
