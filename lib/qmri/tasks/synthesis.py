"""Synthetic CT from T2w MR and synthetic T2w MR from CT (classical: bulk-density tissue classes)."""

from __future__ import annotations

from typing import Any

import numpy as np

from ..classical.bulk_density import synthetic_ct_bulk_density, synthetic_mr_bulk
from ..io.maps import QuantMap
from .spec import TaskSpec, require_3d, voxel_size

CT_RANGE = (-1024.0, 3000.0)


def run_synthetic_ct(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str) -> list[QuantMap]:
    t2w = require_3d(image, "the T2w MR")
    if method != "bulk_density":
        raise ValueError(f"unknown method '{method}' for synthetic_ct")
    vs = voxel_size(affine)
    sct = synthetic_ct_bulk_density(t2w, voxel_size_mm=vs)
    return [QuantMap("sCT", sct, "HU", (-160.0, 240.0), "synthetic CT (brain window; bone window 300..1800 HU)")]


def run_synthetic_mr(image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str) -> list[QuantMap]:
    ct = require_3d(image, "the CT")
    if method != "bulk_density":
        raise ValueError(f"unknown method '{method}' for synthetic_mr")
    if np.percentile(ct, 1) > -500:
        raise ValueError("the CT has no air background below -500 HU: it does not look like a head CT in HU")
    smr = synthetic_mr_bulk(ct)
    return [QuantMap("sMR", smr, "a.u.", (0.0, float(np.percentile(smr, 99.5))), "synthetic T2-weighted MR")]


SYNTHETIC_CT = TaskSpec(
    name="synthetic_ct",
    description="Synthetic CT (HU) from a T2-weighted head MR",
    inputs={"image": "3D T2-weighted MR of the whole head (any units)"},
    outputs={"sCT": {"units": "HU", "display_range": [-160, 240]}},
    methods=("bulk_density",),
    default_method="bulk_density",
    run=run_synthetic_ct,
)

SYNTHETIC_MR = TaskSpec(
    name="synthetic_mr",
    description="Synthetic T2-weighted MR from a head CT in HU",
    inputs={"image": "3D head CT in HU"},
    outputs={"sMR": {"units": "a.u.", "display_range": "0 to the 99.5th percentile"}},
    methods=("bulk_density",),
    default_method="bulk_density",
    run=run_synthetic_mr,
)
