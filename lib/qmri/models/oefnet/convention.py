"""The OEF networks' input and output convention (units shared by every OEF architecture).

Input: the 8 echo magnitudes divided by the echo-1 magnitude (QQ-NET) + QSM in ppm times
:data:`CHI_INPUT_SCALE`; output: the five QQ parameters ``PARAM_NAMES = (S0, R2, Y, v, chi_nb)`` in
QQ-NET normalised units ``(p - QQNET_MEAN) / QQNET_STD`` (S0 relative to the echo-1 magnitude, R2
in 1/s, Y and v as fractions, chi_nb in ppm before normalisation); :func:`denormalise` turns them
back into physical units.
"""

from __future__ import annotations

import numpy as np
import torch

from ...physics.qq import PARAM_NAMES, QQNET_MEAN, QQNET_STD

N_ECHOES = 8
N_INPUTS = N_ECHOES + 1  # 8 normalised echo magnitudes + QSM
N_PARAMS = len(PARAM_NAMES)
CHI_INPUT_SCALE = 10.0  # network QSM input = chi (ppm) * 10, so that tissue values are O(0.1-1)


def normalise_params(p):
    """Physical parameters (last axis S0_rel, R2, Y, v, chi_nb) -> QQ-NET normalised units."""
    mean, std = _stats_like(p)
    return (p - mean) / std


def denormalise(z):
    """QQ-NET normalised units -> physical parameters (S0 relative to echo 1, R2 1/s, Y, v, chi_nb ppm)."""
    mean, std = _stats_like(z)
    return z * std + mean


def _stats_like(x):
    if isinstance(x, torch.Tensor):
        return (torch.as_tensor(QQNET_MEAN, dtype=x.dtype, device=x.device), torch.as_tensor(QQNET_STD, dtype=x.dtype, device=x.device))
    return QQNET_MEAN.astype(np.float32), QQNET_STD.astype(np.float32)
