"""Focal and regional oxygenation changes that OEF maps are made to show.

A clinician maps OEF to find tissue whose OEF differs from the rest of the brain (Derdeyn 2002,
misery perfusion; Powers 1985 / Baron 1989, infarct core and penumbra): raised OEF where perfusion
falls but the tissue still extracts oxygen, low OEF in an infarct core that no longer consumes it,
and a shift across one vascular territory. :func:`draw_oef_regions` places, per subject:

* ``infarct_core``: a sphere of diameter :data:`LESION_DIAMETER_MM` (8-40 mm) with OEF
  U(:data:`INFARCT_CORE_OEF`) = 5-20 %; with probability 1/2 the venous blood volume v is reduced
  (x U(0.3, 0.7)), otherwise unchanged, so OEF cannot be read from v alone.
* ``penumbra`` (misery perfusion): a sphere of diameter 8-40 mm with OEF U(50, 75) %; v
  unchanged or raised (x U(1.0, 1.5)), each with probability 1/2.
* ``territory``: one middle-cerebral-artery-like territory (a lateral band of one hemisphere,
  defined geometrically: lateral distance from the midline >= :data:`TERRITORY_LATERAL_MM`, the
  middle 15-85 % of the brain's anterior-posterior extent and above its lowest 20 %) whose OEF is
  shifted by +-U(8, 15) %-points, with a 3 mm (Gaussian sigma) transition at its border.

Spheres lie in brain tissue (GM, WM, deep GM; not CSF), do not overlap each other or the midline
plane, and each has a
``reference``: its mirror image across the midline (array axis 0 is left-right in the phantoms'
RAS grid) restricted to tissue outside every region, the "matched contralateral tissue" for
contrast recovery. The territory's reference is its mirror image, likewise.

Units: OEF as a fraction (multiply by 100 for %), diameters and distances in mm.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np
from scipy.ndimage import gaussian_filter

INFARCT_CORE_OEF = (0.05, 0.20)
PENUMBRA_OEF = (0.50, 0.75)
LESION_DIAMETER_MM = (8.0, 40.0)
INFARCT_V_FACTOR = (0.3, 0.7)  # applied with probability V_CHANGE_PROBABILITY
PENUMBRA_V_FACTOR = (1.0, 1.5)
V_CHANGE_PROBABILITY = 0.5
TERRITORY_SHIFT = (0.08, 0.15)  # |OEF shift| as a fraction (8-15 %-points), sign drawn
TERRITORY_LATERAL_MM = 12.0
TERRITORY_EDGE_MM = 3.0
TERRITORY_AP = (0.15, 0.85)  # fraction of the brain's anterior-posterior extent
TERRITORY_SI_FLOOR = 0.20  # territory above this fraction of the brain's inferior-superior extent
REGION_OEF_JITTER = 0.01  # smooth within-lesion OEF variation (fraction, sd)


def midline_index(mask: np.ndarray) -> float:
    """Left-right (axis 0) index of the brain's midline: the centre of the brain's extent on axis 0."""
    idx = np.nonzero(mask.any(axis=(1, 2)))[0]
    return 0.5 * (idx[0] + idx[-1])


def mirror_lr(region: np.ndarray, midline: float) -> np.ndarray:
    """Mirror image of a boolean mask across the plane ``axis-0 index == midline``."""
    out = np.zeros_like(region, dtype=bool)
    i = np.nonzero(region)
    j = np.rint(2.0 * midline - i[0]).astype(int)
    ok = (j >= 0) & (j < region.shape[0])
    out[(j[ok],) + tuple(a[ok] for a in i[1:])] = True
    return out


def _sphere(shape, centre, radius_mm, vs) -> np.ndarray:
    grids = np.ogrid[tuple(slice(0, n) for n in shape)]
    d2 = sum(((g - c) * s) ** 2 for g, c, s in zip(grids, centre, vs))
    return d2 <= radius_mm**2


def territory_mask(tissue: np.ndarray, side: int, vs: Sequence[float]) -> np.ndarray:
    """The lateral band of one hemisphere (``side`` +1: higher axis-0 indices, -1: lower) that stands
    in for a middle-cerebral-artery territory (see the module doc), restricted to ``tissue``."""
    mid = midline_index(tissue)
    i = np.arange(tissue.shape[0])
    lateral = (side * (i - mid) * vs[0]) >= TERRITORY_LATERAL_MM
    ys = np.nonzero(tissue.any(axis=(0, 2)))[0]
    zs = np.nonzero(tissue.any(axis=(0, 1)))[0]
    y0, y1 = ys[0] + TERRITORY_AP[0] * (ys[-1] - ys[0]), ys[0] + TERRITORY_AP[1] * (ys[-1] - ys[0])
    z0 = zs[0] + TERRITORY_SI_FLOOR * (zs[-1] - zs[0])
    y = np.arange(tissue.shape[1])
    z = np.arange(tissue.shape[2])
    box = lateral[:, None, None] & ((y >= y0) & (y <= y1))[None, :, None] & (z >= z0)[None, None, :]
    return box & tissue


def draw_oef_regions(tissue: np.ndarray, voxel_size_mm, rng: np.random.Generator) -> dict:
    """Draw one subject's infarct core, penumbra and territory (see the module doc).

    Args:
        tissue: boolean mask of brain tissue that carries blood (GM, WM, deep GM).
        voxel_size_mm: isotropic size or per-axis sizes [mm].
        rng: numpy Generator (same seed -> same regions).

    Returns:
        dict name -> {"mask", "reference", "oef" (fraction; territory: "shift"), "v_factor",
        "diameter_mm", "centre_vox"}, plus for the territory "weight" (float map 0..1: the share of
        the shift each voxel gets, smooth at the border) and "side" (+1/-1 along axis 0).
    """
    vs = np.broadcast_to(np.asarray(voxel_size_mm, dtype=np.float64), (3,))
    shape = tissue.shape
    mid = midline_index(tissue)
    regions: dict[str, dict] = {}
    taken = np.zeros(shape, dtype=bool)
    cands = np.argwhere(tissue)
    for name, oef_range, v_range in (("infarct_core", INFARCT_CORE_OEF, INFARCT_V_FACTOR), ("penumbra", PENUMBRA_OEF, PENUMBRA_V_FACTOR)):
        diameter = rng.uniform(*LESION_DIAMETER_MM)
        oef = rng.uniform(*oef_range)
        v_factor = rng.uniform(*v_range) if rng.uniform() < V_CHANGE_PROBABILITY else 1.0
        # centres far enough from the midline that the sphere's mirror image (its reference) is clear of it
        lateral = cands[np.abs(cands[:, 0] - mid) * vs[0] >= diameter / 2.0 + 2.0]
        pool = lateral if len(lateral) else cands
        for _ in range(50):  # a centre whose sphere is mostly tissue and clear of the other region
            c = pool[rng.integers(len(pool))]
            ball = _sphere(shape, c, diameter / 2.0, vs)
            m = ball & tissue
            if (ball & taken).any() or m.sum() < 0.6 * ball.sum():
                continue
            break
        else:  # small or odd anatomy: accept the last draw, minus what overlaps
            m = ball & tissue & ~taken
        taken |= _sphere(shape, c, diameter / 2.0 + 4.0, vs)  # 4 mm gap to the next region
        regions[name] = {"mask": m, "oef": float(oef), "v_factor": float(v_factor), "diameter_mm": float(diameter), "centre_vox": tuple(int(a) for a in c)}

    side = int(rng.choice((-1, 1)))
    shift = float(rng.choice((-1.0, 1.0)) * rng.uniform(*TERRITORY_SHIFT))
    terr = territory_mask(tissue, side, vs)
    weight = gaussian_filter(terr.astype(np.float64), sigma=tuple(TERRITORY_EDGE_MM / s for s in vs), mode="constant")
    weight = np.where(tissue, weight, 0.0)
    core = terr & (weight >= 0.9)  # where the shift is (nearly) full: the asymmetry ROI
    regions["territory"] = {"mask": core, "weight": weight, "shift": shift, "side": side}

    lesions = regions["infarct_core"]["mask"] | regions["penumbra"]["mask"]
    normal = tissue & ~lesions
    for name in ("infarct_core", "penumbra"):
        regions[name]["reference"] = mirror_lr(regions[name]["mask"], mid) & normal
    ref = mirror_lr(core, mid) & normal & (weight < 0.1)
    regions["territory"]["reference"] = ref
    regions["territory"]["mask"] = core & ~lesions
    return regions


def apply_oef_regions(Y: np.ndarray, v: np.ndarray, regions: dict, rng: np.random.Generator, corr_vox) -> None:
    """Write the regions of :func:`draw_oef_regions` into venous oxygenation ``Y`` and blood volume
    ``v`` (fractions, modified in place): the territory shifts OEF by ``weight * shift``; each
    sphere sets OEF to its value (+ :data:`REGION_OEF_JITTER` smooth variation, clipped to its
    range) and multiplies v by its ``v_factor``."""
    from .qq import YA

    t = regions["territory"]
    oef = 1.0 - Y / YA
    oef += t["weight"] * t["shift"]
    for name, rng_oef in (("infarct_core", INFARCT_CORE_OEF), ("penumbra", PENUMBRA_OEF)):
        r = regions[name]
        m = r["mask"]
        jitter = gaussian_filter(rng.standard_normal(Y.shape), sigma=corr_vox)
        jitter /= max(float(jitter.std()), 1e-12)
        oef[m] = np.clip(r["oef"] + REGION_OEF_JITTER * jitter[m], *rng_oef)
        v[m] *= r["v_factor"]
    Y[...] = YA * (1.0 - oef)
