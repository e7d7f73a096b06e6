"""PET partial-volume-correction network (seed 002's patch-based 3D ResUNet) and its intensity scaling.

Network: MONAI ``UNet`` with residual units (``num_res_units=2``, instance norm: two convolutions with a shortcut per
level, strided-convolution downsampling, transposed-convolution upsampling, skip concatenation), 3D,
1 channel in (scaled PET) and 1 out. A global residual connection adds the (scaled) input to the
U-Net output, so the network learns the partial-volume correction rather than the image itself.
It sees the PET only, no segmentation (seed 002's point: no T1 and no slow classical steps).

FWHM conditioning (beyond seed 002, issue 7): scanners differ in PSF FWHM (5-8 mm), and how much
to sharpen depends on it. With ``in_channels=2`` the second input channel is the sidecar's PSF FWHM
as a constant image, ``fwhm_mm / FWHM_SCALE_MM``; with 1 channel the network must infer the blur
from the image itself. ``qmri bench pvc`` measures both.

Intensity handling (seed 002): per-subject min-max scaling to [0, 1] with the upper end at the
99th percentile of the volume and values above it clipped (``intensity cropping``). The same
per-subject (lo, hi) maps the network output back to the input's units (SUV or kBq/ml):
``y_units = lo + y * (hi - lo)``; the network's normalised values are never returned.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from monai.networks.nets import UNet
from torch import nn

DEFAULT_CHANNELS = (16, 32, 64, 128)
DEFAULT_STRIDES = (2, 2, 2)
DIVISOR = 8  # input sizes must be multiples of 2**3 (three strided downsamplings)
CLIP_PERCENTILE = 99.0  # seed 002: intensities above the 99th percentile are set to it
FWHM_SCALE_MM = 8.0  # conditioning channel = PSF FWHM (mm) / 8 mm, about 0.6-1 over 5-8 mm


RESIDUALS = ("additive", "multiplicative")


class PVCNet(nn.Module):
    """Residual U-Net with a global residual (all in scaled units): ``residual="additive"``:
    ``out = x + gain * UNet(x)``; ``"multiplicative"``: ``out = x * (1 + gain * UNet(x))``.

    ``gain`` is a learned scalar initialised to 0 (ReZero, Bachlechner et al. 2020), so training starts
    from the identity (the uncorrected PET) instead of a random image added to it.

    Why the multiplicative form: region-based voxel-wise correction (RBV, the training target) is
    ``g * s / (h * s)``, the measured PET times a correction field that depends on the anatomy and the
    PSF only. Its noise is the input's noise times that field. Measured on a held-out phantom (seed
    5400, FWHM 5 / 8 mm), even a perfectly denoised RBV reaches only SSIM 0.978 / 0.980 against it,
    while the input times the true field blurred by 0.5 voxel reaches 0.996 / 0.994. A network that
    outputs the input times a predicted field keeps the input's noise where the target has it and
    only has to learn the field. Not yet shown to help: fine-tuned from the shipped additive weights
    on the CPU (2026-12-02, two learning rates, 9 and 12 epochs) it stayed behind them
    (apps/qmri/model/pvcnet/README.md); the shipped networks are additive.
    """

    def __init__(self, channels=DEFAULT_CHANNELS, strides=DEFAULT_STRIDES, num_res_units: int = 2, norm: str = "instance", in_channels: int = 1, residual: str = "additive"):
        super().__init__()
        if in_channels not in (1, 2):
            raise ValueError(f"in_channels must be 1 (PET) or 2 (PET, FWHM), got {in_channels}")
        if residual not in RESIDUALS:
            raise ValueError(f"residual must be one of {RESIDUALS}, got {residual!r}")
        self.in_channels = in_channels
        self.residual = residual
        self.unet = UNet(
            spatial_dims=3,
            in_channels=in_channels,
            out_channels=1,
            channels=tuple(channels),
            strides=tuple(strides),
            num_res_units=num_res_units,
            norm=norm,
        )
        self.gain = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u = self.gain * self.unet(x)
        return x[:, :1] * (1.0 + u) if self.residual == "multiplicative" else x[:, :1] + u


def pvcnet(channels=DEFAULT_CHANNELS, strides=DEFAULT_STRIDES, num_res_units: int = 2, norm: str = "instance", in_channels: int = 1, residual: str = "additive") -> PVCNet:
    return PVCNet(channels, strides, num_res_units, norm, in_channels, residual)


def fwhm_channel(shape, fwhm_mm: float) -> np.ndarray:
    """The conditioning channel: a constant image ``fwhm_mm / FWHM_SCALE_MM`` (float32)."""
    return np.full(shape, float(fwhm_mm) / FWHM_SCALE_MM, dtype=np.float32)


@dataclass(frozen=True)
class Scaling:
    """Per-subject min-max scaling: ``lo`` = volume minimum, ``hi`` = 99th percentile (input units)."""

    lo: float
    hi: float

    @classmethod
    def of(cls, pet: np.ndarray, percentile: float = CLIP_PERCENTILE) -> "Scaling":
        pet = np.asarray(pet, dtype=np.float64)
        if pet.size == 0 or not np.all(np.isfinite(pet)):
            raise ValueError("PET must be a non-empty array of finite values")
        lo, hi = float(pet.min()), float(np.percentile(pet, percentile))
        if hi - lo <= 1e-12 * max(1.0, abs(hi)):
            raise ValueError(f"PET is constant up to its {percentile:g}th percentile ({lo:.4g}): nothing to scale")
        return cls(lo, hi)

    def normalise(self, x, clip: bool = True):
        """Input units -> [0, 1] (clipped at 1 = the 99th percentile when ``clip``); numpy or torch."""
        y = (x - self.lo) / (self.hi - self.lo)
        if clip:
            y = y.clamp(max=1.0) if isinstance(y, torch.Tensor) else np.minimum(y, 1.0)
        return y

    def denormalise(self, y):
        """Scaled values -> input units (SUV or kBq/ml); numpy or torch."""
        return self.lo + y * (self.hi - self.lo)
