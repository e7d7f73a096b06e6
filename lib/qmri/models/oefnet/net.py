"""The OEF networks by architecture name: :func:`build`, and what the predictor needs to know of each.

* seed 000's 3D CNN and seed 001's voxelwise LSTM (and an unshipped bounded U-Net):
  :mod:`qmri.models.oefnet.net_seed`;
* the "best" candidates, :class:`ContextNet` and :class:`SetContextNet` (the shipped best is the one
  ``qmri train oef --model best`` selects): :mod:`qmri.models.oefnet.net_context`, on the multi-scale
  features of :mod:`qmri.models.oefnet.pyramid`;
* the input/output convention (normalised echoes + scaled QSM in, QQ-NET-normalised parameters out):
  :mod:`qmri.models.oefnet.convention`. The physics-consistency term that re-simulates the echoes and the QSM
  lives in the training recipe (:mod:`qmri.models.oefnet.train`).
"""

from __future__ import annotations

import math

from torch import nn

from .net_context import *  # noqa: F401,F403  (the context networks' names, used as oef_nets.X)
from .net_context import CONTEXT_HIDDEN, CONTEXT_SIGMAS, GLOBAL_CODE, ContextNet, SetContextNet
from .convention import *  # noqa: F401,F403
from .pyramid import CONTEXT_COARSE_FROM, axis_operator, pyramid_plan  # noqa: F401
from .net_seed import *  # noqa: F401,F403
from .net_seed import CNN_WIDTHS, DENSE_UNITS, LSTM_UNITS, OEFLSTM, UNET_FEATURES, BoundedUNet, cnn3d

ARCHITECTURES = ("cnn3d", "lstm", "unet", "context", "setcontext")


def build(arch: str, **kw) -> nn.Module:
    """Network by architecture name (``cnn3d``, ``lstm``, ``unet``, ``context``, ``setcontext``) with optional widths."""
    if arch == "cnn3d":
        return cnn3d(kw.get("widths", CNN_WIDTHS))
    if arch == "lstm":
        return OEFLSTM(kw.get("units", LSTM_UNITS), kw.get("dense", DENSE_UNITS))
    if arch == "unet":
        return BoundedUNet(kw.get("features", UNET_FEATURES))
    if arch == "context":
        return ContextNet(kw.get("sigmas", CONTEXT_SIGMAS), kw.get("hidden", CONTEXT_HIDDEN), coarse_from=kw.get("coarse_from", CONTEXT_COARSE_FROM), uncertainty=kw.get("uncertainty", False), profile=kw.get("profile", False))
    if arch == "setcontext":
        return SetContextNet(kw.get("sigmas", CONTEXT_SIGMAS), kw.get("hidden", CONTEXT_HIDDEN), kw.get("code", GLOBAL_CODE), kw.get("coarse_from", CONTEXT_COARSE_FROM), uncertainty=kw.get("uncertainty", False), profile=kw.get("profile", False))
    raise ValueError(f"unknown OEF architecture {arch!r}; choose from {', '.join(ARCHITECTURES)}")


def uses_context_features(arch: str) -> bool:
    """True for the networks that run on fixed :meth:`ContextNet.features` of the whole volume."""
    return arch in ("context", "setcontext")


def checkpoint_arch_kwargs(cfg: dict) -> dict:
    """The :func:`build` keyword arguments of a saved checkpoint's ``config``. Context networks saved
    before the large scales moved to the coarse grid (no ``coarse_from`` recorded, features version
    1) are rebuilt with the direct blurs at every scale they were trained on, and those saved
    without their head widths with the 128-128-64 head they had."""
    kw = dict(cfg.get("arch_kwargs") or {})
    if uses_context_features(cfg["arch"]):
        kw.setdefault("coarse_from", math.inf)
        kw.setdefault("hidden", CONTEXT_HIDDEN)  # the only width saved before widths were recorded
    return kw


def is_voxelwise(arch: str) -> bool:
    """True for the LSTM, whose input is the voxel alone (the context network sees whole volumes)."""
    return arch == "lstm"
