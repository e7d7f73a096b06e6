"""The seed papers' OEF networks: seed 000's 3D CNN, seed 001's voxelwise LSTM, and a bounded U-Net.

* :func:`cnn3d` (seed 000, Lee & Lee 2025): input layer + 3 hidden Conv3D layers with LeakyReLU +
  output Conv3D, channels widening through the hidden layers, no batch norm, no dropout. Built from
  MONAI ``Convolution`` blocks (norm and dropout off). The seed does not state widths or kernel
  sizes; 3x3x3 kernels and widths (16, 32, 64) keep it trainable on one CPU core.
* :class:`OEFLSTM` (seed 001, voxelwise): the 9 inputs become a 5-step sequence (:func:`to_sequence`),
  4 stacked LSTM layers of 512, 256, 128, 64 units (the first three return every step, the last only
  its final step), Flatten, 3 Dense layers with LeakyReLU(0.01) and a 5-unit output. MONAI has no
  recurrent regression block, so torch's ``nn.LSTM`` layers are used directly.
* :class:`BoundedUNet`: MONAI ``BasicUNet`` (instance norm, LeakyReLU) whose five outputs are
  squashed by a sigmoid into the QQ-NET physical bounds and returned in normalised units (not shipped).
"""

from __future__ import annotations

import math

import numpy as np
import torch
from monai.networks.blocks import Convolution
from monai.networks.nets import BasicUNet
from torch import nn

from ...physics.qq import PARAM_LOWER, PARAM_UPPER, QQNET_MEAN, QQNET_STD
from .convention import N_INPUTS, N_PARAMS

SEQ_STEPS = 5  # seed 001: the 9 inputs as a 5-step sequence
SEQ_WIDTH = N_INPUTS - SEQ_STEPS + 1  # = 5 values per step (sliding window)
CNN_WIDTHS = (16, 32, 64)
LSTM_UNITS = (512, 256, 128, 64)
DENSE_UNITS = (64, 32, 16)
UNET_FEATURES = (16, 16, 32, 64, 96, 16)
UNET_DIVISOR = 16  # BasicUNet pools four times


# ------------------------------------------------------------------------------------------------
# Seed 000: 3D CNN
# ------------------------------------------------------------------------------------------------
def cnn3d(widths=CNN_WIDTHS) -> nn.Module:
    """Seed-000 3D CNN: Conv3D(9 -> w0) + 2 hidden Conv3D (w0 -> w1 -> w2), LeakyReLU after each of
    these three, then the output Conv3D (w2 -> 5), linear. 3x3x3 kernels, 'same' padding, no norm or
    dropout. Input (B, 9, D, H, W), output (B, 5, D, H, W) in normalised units."""
    chans = (N_INPUTS,) + tuple(widths)
    layers = [Convolution(3, chans[i], chans[i + 1], kernel_size=3, act=("leakyrelu", {"negative_slope": 0.01}), norm=None, dropout=None) for i in range(len(widths))]
    layers.append(Convolution(3, chans[-1], N_PARAMS, kernel_size=3, conv_only=True))
    return nn.Sequential(*layers)


# ------------------------------------------------------------------------------------------------
# Seed 001: voxelwise LSTM
# ------------------------------------------------------------------------------------------------
def to_sequence(x):
    """(N, 9) voxel inputs -> (N, 5, 5) sequence: step k holds inputs k..k+4 (sliding window).

    Seed 001 turns the 8 echo values and the QSM value into "sequence data with 5 time steps" and
    does not give the mapping; a width-5 sliding window over the ordered inputs (echo 1..8, QSM) is
    the standard Keras time-series construction that yields exactly 5 steps from 9 values and keeps
    the echo order as the time axis. Works on numpy arrays and tensors.
    """
    if x.shape[-1] != N_INPUTS:
        raise ValueError(f"expected {N_INPUTS} inputs per voxel, got {x.shape[-1]}")
    steps = [x[..., k : k + SEQ_WIDTH] for k in range(SEQ_STEPS)]
    return torch.stack(steps, dim=-2) if isinstance(x, torch.Tensor) else np.stack(steps, axis=-2)


class OEFLSTM(nn.Module):
    """Seed-001 voxelwise LSTM: (N, 9) normalised inputs -> (N, 5) normalised parameters."""

    def __init__(self, units=LSTM_UNITS, dense=DENSE_UNITS):
        super().__init__()
        sizes = (SEQ_WIDTH,) + tuple(units)
        self.lstms = nn.ModuleList(nn.LSTM(sizes[i], sizes[i + 1], batch_first=True) for i in range(len(units)))
        d = (units[-1],) + tuple(dense)
        mlp = []
        for i in range(len(dense)):
            mlp += [nn.Linear(d[i], d[i + 1]), nn.LeakyReLU(0.01)]
        mlp.append(nn.Linear(d[-1], N_PARAMS))
        self.head = nn.Sequential(nn.Flatten(), *mlp)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = to_sequence(x)
        for lstm in self.lstms:
            h, _ = lstm(h)  # the first three return every step (as does the 4th, sliced below)
        return self.head(h[:, -1])  # the last LSTM layer returns only its final step


# ------------------------------------------------------------------------------------------------
# Best: bounded 3D U-Net
# ------------------------------------------------------------------------------------------------
class BoundedUNet(nn.Module):
    """MONAI BasicUNet whose outputs are confined to the physical bounds, in normalised units.

    ``p = lower + (upper - lower) * sigmoid(u + b)`` per parameter, with the fixed offset ``b``
    chosen so that ``u = 0`` gives the QQ-NET mean; the result is returned as ``(p - mean) / std``.
    Input sizes must be multiples of :data:`UNET_DIVISOR`.
    """

    def __init__(self, features=UNET_FEATURES):
        super().__init__()
        self.unet = BasicUNet(
            spatial_dims=3,
            in_channels=N_INPUTS,
            out_channels=N_PARAMS,
            features=tuple(features),
            act=("LeakyReLU", {"negative_slope": 0.01, "inplace": True}),
            norm=("instance", {"affine": True}),
            upsample="deconv",
        )
        frac = (QQNET_MEAN - PARAM_LOWER) / (PARAM_UPPER - PARAM_LOWER)
        shape = (1, N_PARAMS, 1, 1, 1)
        self.register_buffer("offset", torch.tensor([math.log(f / (1 - f)) for f in frac], dtype=torch.float32).view(shape))
        self.register_buffer("lower", torch.tensor(PARAM_LOWER, dtype=torch.float32).view(shape))
        self.register_buffer("span", torch.tensor(PARAM_UPPER - PARAM_LOWER, dtype=torch.float32).view(shape))
        self.register_buffer("mean", torch.tensor(QQNET_MEAN, dtype=torch.float32).view(shape))
        self.register_buffer("std", torch.tensor(QQNET_STD, dtype=torch.float32).view(shape))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.lower + self.span * torch.sigmoid(self.unet(x) + self.offset)
        return (p - self.mean) / self.std
