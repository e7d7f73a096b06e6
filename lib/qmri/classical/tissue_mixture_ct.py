"""Classical synthetic CT from a T2w MR by two-compartment tissue mixtures (HU, no training).

The bulk-density method (:mod:`qmri.classical.bulk_density`) gives every voxel of a class one CT
number, so a skull voxel is 1000 HU whether it is dense cortical table (~1800 HU) or fatty diploe
(~800 HU), and a brain voxel is 40 HU whether it is WM, GM or CSF. Both relationships are visible in
the MR intensity, because CT numbers and T2w signals are both linear in the volume fractions of a
voxel's compartments (``HU = sum_c p_c HU_c``, ``S = sum_c p_c S_c``; :mod:`qmri.physics.ct_mr`):

* **Skull**: dark voxels inside the head, below the bulk method's Otsu bone threshold and below
  the midpoint of the diploe and skin/muscle signals (~80 a.u.; Otsu alone, ~110 a.u. on the
  phantoms, takes the dark outer skin/muscle layer, ~117 a.u., for bone). A mixture of cortical
  bone, whose T2w signal is ~0 (T2 well below 1 ms), and diploe, whose fatty marrow gives a small
  signal ``S_dip`` (~41 a.u.). The cortical fraction is ``f = (S_dip - S) / (S_dip - S_floor)``
  clipped to 0..1, ``S_floor`` being the magnitude image's noise floor (the mean of the
  background, the Rician mean ``sigma sqrt(pi/2)`` of a zero signal), and ``HU = f HU_cort +
  (1 - f) HU_dip``. At SNR 30 the noise (~6 a.u.) is a sixth of ``S_dip``, so ``S`` is first
  averaged over the skull with a normalised Gaussian of ``skull_smooth_vox`` voxels (skull voxels
  only, so brain and scalp signals do not leak in).
* **Outer skull surface**: scalp voxels touching the skull are bone + scalp mixtures; their bone
  fraction follows from ``S`` between the mean bone signal (``S_dip / 2``) and the mean scalp
  signal (half fat, half skin/muscle), with the mean of the cortical and diploe HU for the bone.
  (The same rule on the inner surface, bone + CSF, was measured to raise the MAE: brain voxels
  touching the 2 mm skull band are often pure GM, which it would call 50 % bone.)
* **Inside the skull**: a two-compartment mixture along the T2w intensity axis, WM-GM below the GM
  signal and GM-CSF above it (``HU = HU_a + (HU_b - HU_a) (S - S_a) / (S_b - S_a)``).
* **Scalp** (outside the skull): skin/muscle-fat mixture, ``HU = f HU_fat + (1 - f) HU_muscle``
  with ``f = (S - S_muscle) / (S_fat - S_muscle)`` clipped to 0..1.
* **Air** outside the head mask: -1000 HU.

Inside and outside the skull are told apart without a closed skull surface: a non-bone head voxel
is scalp when it lies closer to the head surface than its nearest skull voxel (depths from
:func:`scipy.ndimage.distance_transform_edt`, nearest skull voxel from its feature transform), so a
gap in the 2 mm skull band does not let the scalp leak into the brain.

Compartment CT numbers and signals are the table means of :data:`qmri.physics.ct_mr.
TISSUE_PROPERTIES` through :func:`qmri.physics.ct_mr.tissue_t2w_intensity` (published 3 T
relaxation times and HU, REFERENCE.md section 4), so the MR must be in the phantom's units (CSF
~580 a.u. at TR/TE 4000/90 ms), as for the network. No ground truth and no CT enters: this is a
classical, training-free method, selectable as ``tissue_mixture``.

Written here because no maintained library maps T2w intensities to HU; thresholds and masks reuse
the bulk-density method's (Otsu from scikit-image, morphology from scipy).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from ..physics.ct_mr import TISSUE_PROPERTIES, tissue_t2w_intensity
from .bulk_density import BULK_HU, mr_class_thresholds, mr_with_head


def _line(s: np.ndarray, s_a: float, s_b: float, hu_a: float, hu_b: float) -> np.ndarray:
    """HU of a two-compartment mixture whose signal runs from ``s_a`` (pure a) to ``s_b`` (pure b)."""
    f = np.clip((s - s_a) / (s_b - s_a), 0.0, 1.0)
    return hu_a + f * (hu_b - hu_a)


def noise_floor(t2w: np.ndarray, head: np.ndarray) -> float:
    """Mean magnitude of the background (a.u.): the Rician mean of a zero signal; 0 when the
    background is absent (fewer than 1000 voxels outside the head) or has been zeroed."""
    bg = t2w[~head]
    if bg.size < 1000:
        return 0.0
    return max(float(bg.mean()), 0.0)


def outside_skull(head: np.ndarray, skull: np.ndarray, voxel_size_mm) -> np.ndarray:
    """Head voxels that lie outside the skull (bool): closer to the head surface than their
    nearest skull voxel is (ties, which the voxel grid makes common, count as inside: measured on
    the phantoms, counting them outside raised the sCT MAE by ~14 HU). Without
    any skull voxel the whole head counts as inside."""
    if not skull.any():
        return np.zeros_like(head)
    vs = np.broadcast_to(np.asarray(voxel_size_mm, float), (3,))
    depth = ndimage.distance_transform_edt(head, sampling=vs)
    _, idx = ndimage.distance_transform_edt(~skull, sampling=vs, return_indices=True)
    return head & ~skull & (depth < depth[tuple(idx)])


def _regions(s: np.ndarray, head: np.ndarray, voxel_size_mm) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Skull, scalp and inside-the-skull masks (bool) of a T2w MR ``s`` (a.u.) with head mask ``head``."""
    t_bone, _ = mr_class_thresholds(s, head)
    skull = head & (s < min(t_bone, 0.5 * (tissue_t2w_intensity("diploe") + tissue_t2w_intensity("skin_muscle"))))
    scalp = outside_skull(head, skull, voxel_size_mm)
    return skull, scalp, head & ~skull & ~scalp


def inside_skull_mask(t2w: np.ndarray, head_mask: np.ndarray | None = None, *, voxel_size_mm: float | tuple[float, float, float] = 2.0) -> np.ndarray:
    """Voxels (bool) that :func:`synthetic_ct_tissue_mixture` treats as inside the skull (brain, CSF,
    vessels): head voxels that are neither skull nor scalp. ``t2w`` in the phantom's units (a.u.)."""
    s, head = mr_with_head(t2w, head_mask, voxel_size_mm)
    return _regions(s, head, voxel_size_mm)[2]


def synthetic_ct_tissue_mixture(
    t2w: np.ndarray,
    head_mask: np.ndarray | None = None,
    *,
    voxel_size_mm: float | tuple[float, float, float] = 2.0,
    floor: float | None = None,
    skull_smooth_vox: float = 0.6,
) -> np.ndarray:
    """Synthetic CT (HU, float32, shape of ``t2w``) from a T2w MR by tissue mixtures (module docstring).

    t2w: 3D T2w magnitude in the phantom's units (a.u.); head_mask: optional bool mask (default
    :func:`qmri.classical.bulk_density.head_mask_from_mr`); voxel_size_mm: voxel size (mm);
    floor: the magnitude of a zero signal (a.u.; default :func:`noise_floor`); skull_smooth_vox:
    sd (voxels) of the normalised Gaussian averaging of the skull signal (0: none).
    """
    s, head = mr_with_head(t2w, head_mask, voxel_size_mm)
    tp = TISSUE_PROPERTIES
    sig = {k: tissue_t2w_intensity(k) for k in ("diploe", "wm", "cortical_gm", "csf", "skin_muscle", "fat")}
    skull, scalp, brain = _regions(s, head, voxel_size_mm)
    s0 = noise_floor(s, head) if floor is None else float(floor)

    hu = np.full(s.shape, BULK_HU["air"], np.float32)
    # skull: cortical (signal ~ the noise floor) <-> diploe
    s_sk = s
    if skull_smooth_vox > 0:
        w = ndimage.gaussian_filter(skull.astype(np.float32), skull_smooth_vox)
        s_sk = ndimage.gaussian_filter(np.where(skull, s, 0.0).astype(np.float32), skull_smooth_vox) / np.maximum(w, 1e-6)
    hu[skull] = _line(s_sk[skull], s0, sig["diploe"], tp["cortical_bone"].hu, tp["diploe"].hu)
    # inside the skull: WM <-> GM below the GM signal, GM <-> CSF above it
    sb = s[brain]
    hu[brain] = np.where(
        sb < sig["cortical_gm"],
        _line(sb, sig["wm"], sig["cortical_gm"], tp["wm"].hu, tp["cortical_gm"].hu),
        _line(sb, sig["cortical_gm"], sig["csf"], tp["cortical_gm"].hu, tp["csf"].hu),
    )
    # scalp: skin/muscle <-> fat
    hu[scalp] = _line(s[scalp], sig["skin_muscle"], sig["fat"], tp["skin_muscle"].hu, tp["fat"].hu)
    # outer skull surface: bone + scalp mixtures
    surface = scalp & ndimage.binary_dilation(skull, np.ones((3, 3, 3), bool))
    s_scalp = 0.5 * (sig["fat"] + sig["skin_muscle"])
    hu_scalp = 0.5 * (tp["fat"].hu + tp["skin_muscle"].hu)
    hu_bone = 0.5 * (tp["cortical_bone"].hu + tp["diploe"].hu)
    hu[surface] = _line(s[surface], 0.5 * sig["diploe"], s_scalp, hu_bone, hu_scalp)
    return hu
