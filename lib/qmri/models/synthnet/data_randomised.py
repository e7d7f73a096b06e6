"""Domain-randomised synthesis training volumes: one phantom anatomy, many scanners.

The shipped generators were trained on phantoms with one T2w protocol (TR/TE 4000/90 ms, SNR 30, a
+-15 % order-2 bias field, 3 % tissue-property jitter) and one CT (5 HU noise, the phantom's HU
table), so they have learned that simulator (issue 25). :func:`make_randomised_volume` keeps a
training subject's anatomy and draws the physics of each variant from wide ranges
(:data:`RANGES`):

* T2w: TR 2500-6000 ms, TE 70-120 ms, per-tissue PD/T1/T2 jitter 3-10 %, SNR 12-60, bias field
  amplitude 0-40 % and polynomial order 1-4; the image is then rescaled so that its CSF median
  matches the standard protocol's (the generators read the phantom's intensity units, CSF ~580 a.u.);
* CT: noise 2-15 HU, every compartment's HU shifted by up to 2 between-subject sd, scalp skin
  1-3 mm and fat fraction 0.3-0.7.

``qmri train synth --randomised-variants K`` adds K such variants of every training subject to the
unpaired pools (the MR variants to the MR pool, the CT variants to the CT pool; still no subject in
both). Units: T2w a.u., CT HU, times ms, sizes mm.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from ...anatomy.labels import LABEL
from .data import SynthVolume, default_cache_dir

#: (low, high) of each randomised physics parameter.
RANGES = {
    "tr_ms": (2500.0, 6000.0),
    "te_ms": (70.0, 120.0),
    "mr_cv": (0.03, 0.10),
    "snr": (12.0, 60.0),
    "bias_amplitude": (0.0, 0.4),
    "bias_order": (1, 4),
    "ct_noise_sd_hu": (2.0, 15.0),
    "hu_shift_sd": (-2.0, 2.0),
    "skin_mm": (1.0, 3.0),
    "fat_fraction": (0.3, 0.7),
}
VARIANT_SEED = 77_000  # offset of the physics draws, so a variant's physics never repeats a subject's


def draw_physics(rng: np.random.Generator) -> dict:
    """One scanner: T2w protocol, bias, noise, CT noise and HU shifts (in between-subject sd)."""
    from ...physics.ct_mr import TISSUE_PROPERTIES

    r = RANGES
    return {
        "tr_ms": float(rng.uniform(*r["tr_ms"])),
        "te_ms": float(rng.uniform(*r["te_ms"])),
        "mr_cv": float(rng.uniform(*r["mr_cv"])),
        "snr": float(rng.uniform(*r["snr"])),
        "bias_amplitude": float(rng.uniform(*r["bias_amplitude"])),
        "bias_order": int(rng.integers(r["bias_order"][0], r["bias_order"][1] + 1)),
        "ct_noise_sd_hu": float(rng.uniform(*r["ct_noise_sd_hu"])),
        "hu_shift": {name: float(rng.uniform(*r["hu_shift_sd"])) for name in TISSUE_PROPERTIES},
        "skin_mm": float(rng.uniform(*r["skin_mm"])),
        "fat_fraction": float(rng.uniform(*r["fat_fraction"])),
    }


def randomised_images(subject, physics: dict, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """(T2w a.u., CT HU) of ``subject`` (a :class:`qmri.anatomy.phantom.Subject`) under ``physics``."""
    from ...physics.ct_mr import TE_MS, TR_MS, TISSUE_PROPERTIES, ct_hu, draw_subject_hu, t2w_mr

    vs = subject.voxel_size_mm
    p = physics
    hu = draw_subject_hu(rng)
    hu = {name: float(np.clip(v + p["hu_shift"][name] * TISSUE_PROPERTIES[name].hu_sd, *TISSUE_PROPERTIES[name].hu_range)) for name, v in hu.items()}
    ct = ct_hu(subject.labels, subject.probseg, subject.lesions, rng, vs, noise_sd_hu=p["ct_noise_sd_hu"], skin_mm=p["skin_mm"], fat_fraction=p["fat_fraction"], hu_values=hu)
    kw = dict(skin_mm=p["skin_mm"], fat_fraction=p["fat_fraction"], mr_cv=p["mr_cv"], bias_amplitude=p["bias_amplitude"], bias_order=p["bias_order"])
    mr = t2w_mr(subject.labels, subject.probseg, subject.lesions, rng, vs, snr=p["snr"], tr_ms=p["tr_ms"], te_ms=p["te_ms"], **kw)
    # the generators read the standard protocol's units: put this protocol's CSF where that one's is
    csf = subject.probseg[..., LABEL["csf"]] > 0.9
    if csf.sum() > 20:
        standard = t2w_mr(subject.labels, subject.probseg, subject.lesions, np.random.default_rng(0), vs, bias_field=False, snr=None, tr_ms=TR_MS, te_ms=TE_MS, mr_cv=0.0)
        mr = mr * np.float32(np.median(standard[csf]) / max(float(np.median(mr[csf])), 1e-6))
    return mr.astype(np.float32), ct.astype(np.float32)


def randomised_volumes(seed: int, variants: int, resolution_mm: float = 2.0, cache_dir: str | Path | None = None) -> list[SynthVolume]:
    """Variants 0..``variants``-1 of training subject ``seed``: its anatomy under randomly drawn physics
    (reproducible per seed and variant), cached as ``.npz`` like :func:`qmri.models.synthnet.data.make_volume`;
    the anatomy is built once, and only when a variant is not cached."""
    cache = Path(cache_dir) if cache_dir else default_cache_dir()
    subject, out = None, []
    for variant in range(int(variants)):
        f = cache / f"synth_{seed}_{resolution_mm:g}mm_random{variant}.npz"
        name = f"phantom-{seed}-random{variant}"
        if f.exists():
            d = np.load(f)
            out.append(SynthVolume(d["mr"], d["ct"], d["head"], name))
            continue
        if subject is None:
            from ...anatomy.phantom import make_subject

            subject = make_subject(seed, resolution_mm, subject_id=f"phantom-{seed}")
        rng = np.random.default_rng([VARIANT_SEED, int(seed), variant])
        mr, ct = randomised_images(subject, draw_physics(rng), rng)
        vol = SynthVolume(mr, ct, subject.head_mask.astype(bool), name)
        cache.mkdir(parents=True, exist_ok=True)
        tmp = f.with_suffix(".tmp.npz")
        np.savez_compressed(tmp, mr=vol.mr, ct=vol.ct, head=vol.head)
        tmp.replace(f)
        out.append(vol)
    return out
