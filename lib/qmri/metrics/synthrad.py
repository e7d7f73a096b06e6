"""Image metrics for synthetic CT / MR in the SynthRAD2023 convention.

Follows the challenge's evaluation code (github.com/SynthRAD2023/metrics,
``functions/image_metrics.py``; REFERENCE.md section 4):

* MAE (HU): mean |pred - truth| over the (binarised) head mask, no clipping.
* PSNR (dB): both images clipped to [-1024, 3000] HU, voxels inside the mask only, data range
  4024 HU, ``10 log10(range^2 / MSE)`` (skimage ``peak_signal_noise_ratio``). Identical images
  give ``inf`` (no cap).
* SSIM: both images clipped to [-1024, 3000] HU, voxels outside the mask set to -1024, shifted to
  be non-negative, skimage ``structural_similarity`` (7-voxel uniform window, K1 0.01, K2 0.03,
  data range 4024) with the full SSIM map, averaged over the mask after cropping a 3-voxel border
  (as skimage does for its own mean).

For MR (arbitrary units) the same PSNR/SSIM are applied after :func:`normalise_mr`: both images
divided by the 99.5th percentile of the reference inside the mask and clipped to [0, 1], data
range 1.

Bone overlap: voxels >= 300 HU (a common CT bone threshold; cancellous bone starts near
200-300 HU, soft tissue and haemorrhage stay below 100 HU).
"""

from __future__ import annotations

import math
from typing import NamedTuple

import numpy as np
from skimage.metrics import peak_signal_noise_ratio, structural_similarity
from skimage.util import crop

#: SynthRAD2023 CT intensity window (HU) and its data range.
CT_CLIP = (-1024.0, 3000.0)
CT_DATA_RANGE = 4024.0
#: Bone threshold (HU) for Dice/IoU.
BONE_THRESHOLD_HU = 300.0
#: Percentile of the reference MR used as the top of the [0, 1] range.
MR_PERCENTILE = 99.5
SSIM_WIN = 7


def _pair(pred, truth) -> tuple[np.ndarray, np.ndarray]:
    pred = np.asarray(pred, dtype=np.float64)
    truth = np.asarray(truth, dtype=np.float64)
    if pred.shape != truth.shape:
        raise ValueError(f"pred and truth shapes differ: {pred.shape} vs {truth.shape}")
    if pred.ndim not in (2, 3):
        raise ValueError(f"images must be 2D or 3D, got shape {pred.shape}")
    if not (np.all(np.isfinite(pred)) and np.all(np.isfinite(truth))):
        raise ValueError("images must be finite")
    return pred, truth


def _mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, bool)
    mask = np.asarray(mask)
    if mask.shape != tuple(shape):
        raise ValueError(f"mask shape {mask.shape} does not match image shape {tuple(shape)}")
    mask = mask > 0
    if not mask.any():
        raise ValueError("mask is empty")
    return mask


def mae_hu(pred, truth, mask=None) -> float:
    """Mean absolute error (HU, or the images' units) over ``mask`` (all voxels if None)."""
    pred, truth = _pair(pred, truth)
    m = _mask(mask, pred.shape)
    return float(np.abs(pred[m] - truth[m]).mean())


def psnr(pred, truth, mask=None, data_range: float = CT_DATA_RANGE, clip=CT_CLIP) -> float:
    """PSNR (dB) over ``mask`` after clipping both images to ``clip`` (None: no clipping).

    ``10 log10(data_range^2 / MSE)``; ``inf`` for identical images.
    """
    pred, truth = _pair(pred, truth)
    m = _mask(mask, pred.shape)
    if clip is not None:
        pred, truth = np.clip(pred, *clip), np.clip(truth, *clip)
    t, p = truth[m], pred[m]
    if np.array_equal(t, p):
        return math.inf
    return float(peak_signal_noise_ratio(t, p, data_range=float(data_range)))


def ssim_masked(pred, truth, mask=None, clip=CT_CLIP, data_range: float | None = None) -> float:
    """SSIM averaged over ``mask`` (SynthRAD2023 recipe, see the module docstring).

    ``clip``: intensity window (low, high); outside the mask both images are set to ``low``.
    ``data_range`` defaults to ``high - low``. Images need every side >= 7 voxels.
    """
    pred, truth = _pair(pred, truth)
    if min(pred.shape) < SSIM_WIN:
        raise ValueError(f"SSIM needs every image side >= {SSIM_WIN} voxels, got {pred.shape}")
    m = _mask(mask, pred.shape)
    if clip is None:
        lo, hi = float(np.min(truth)), float(np.max(truth))
    else:
        lo, hi = float(clip[0]), float(clip[1])
    if data_range is None:
        data_range = hi - lo
    pred = np.where(m, np.clip(pred, lo, hi), lo) - lo
    truth = np.where(m, np.clip(truth, lo, hi), lo) - lo
    _, smap = structural_similarity(truth, pred, data_range=float(data_range), full=True, win_size=SSIM_WIN)
    pad = (SSIM_WIN - 1) // 2
    inner = crop(m, pad)
    if not inner.any():
        raise ValueError("mask lies entirely within the 3-voxel border that SSIM crops")
    return float(crop(smap, pad)[inner].mean(dtype=np.float64))


class BoneOverlap(NamedTuple):
    """Dice and IoU (Jaccard) of the bone masks (dimensionless, 0..1)."""

    dice: float
    iou: float


def bone_dice(pred, truth, threshold_hu: float = BONE_THRESHOLD_HU, mask=None) -> BoneOverlap:
    """Dice and IoU of ``pred >= threshold_hu`` vs ``truth >= threshold_hu`` (HU), within ``mask``.

    Both bone masks empty gives (1.0, 1.0). Counted by hand: MONAI's ``compute_dice`` wants
    one-hot batched tensors and returns NaN for empty ground truth.
    """
    pred, truth = _pair(pred, truth)
    m = _mask(mask, pred.shape)
    a = (pred >= threshold_hu) & m
    b = (truth >= threshold_hu) & m
    inter = float(np.count_nonzero(a & b))
    sa, sb = float(np.count_nonzero(a)), float(np.count_nonzero(b))
    if sa + sb == 0:
        return BoneOverlap(1.0, 1.0)
    return BoneOverlap(2.0 * inter / (sa + sb), inter / (sa + sb - inter))


def normalise_mr(img, reference, mask=None, percentile: float = MR_PERCENTILE) -> np.ndarray:
    """``img`` divided by the ``percentile`` of ``reference`` inside ``mask``, clipped to [0, 1]."""
    img = np.asarray(img, dtype=np.float64)
    ref = np.asarray(reference, dtype=np.float64)
    m = _mask(mask, ref.shape)
    top = float(np.percentile(ref[m], percentile))
    if not top > 0:
        raise ValueError("reference MR has no positive intensity inside the mask")
    return np.clip(img / top, 0.0, 1.0)


def psnr_mr(pred, truth, mask=None, percentile: float = MR_PERCENTILE) -> float:
    """PSNR (dB) of MR images normalised by :func:`normalise_mr` (range [0, 1], data range 1)."""
    return psnr(
        normalise_mr(pred, truth, mask, percentile),
        normalise_mr(truth, truth, mask, percentile),
        mask,
        data_range=1.0,
        clip=(0.0, 1.0),
    )


def ssim_mr(pred, truth, mask=None, percentile: float = MR_PERCENTILE) -> float:
    """Masked SSIM of MR images normalised by :func:`normalise_mr` (window [0, 1])."""
    return ssim_masked(
        normalise_mr(pred, truth, mask, percentile),
        normalise_mr(truth, truth, mask, percentile),
        mask,
        clip=(0.0, 1.0),
        data_range=1.0,
    )


def evaluate_sct(pred_hu, truth_hu, mask=None, threshold_hu: float = BONE_THRESHOLD_HU) -> dict[str, float]:
    """All sCT metrics: mae (HU), psnr (dB), ssim, bone_dice, bone_iou."""
    ov = bone_dice(pred_hu, truth_hu, threshold_hu, mask)
    return {
        "mae": mae_hu(pred_hu, truth_hu, mask),
        "psnr": psnr(pred_hu, truth_hu, mask),
        "ssim": ssim_masked(pred_hu, truth_hu, mask),
        "bone_dice": ov.dice,
        "bone_iou": ov.iou,
    }


def evaluate_smr(pred, truth, mask=None, percentile: float = MR_PERCENTILE) -> dict[str, float]:
    """All sMR metrics on normalised intensities: psnr (dB), ssim."""
    return {"psnr": psnr_mr(pred, truth, mask, percentile), "ssim": ssim_mr(pred, truth, mask, percentile)}
