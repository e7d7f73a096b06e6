"""A multi-echo GRE acquisition as read from a scanner's files, and the studies built from it.

The input adapters (:mod:`qmri.io.dicom_input`, :mod:`qmri.io.bids_input`) read DICOM series or a
BIDS dataset into a :class:`MultiEcho`; :meth:`MultiEcho.qsm_raw_study` then makes the app's
``qsm_raw`` input (4D: E magnitudes, E wrapped phases in rad, brain mask; channels last) and its
sidecar, so nothing is assembled by hand.

Geometry conventions: arrays are indexed (i, j, k) as nibabel gives them; ``affine`` maps voxel
indices to RAS+ world coordinates in mm (NIfTI). The main field B0 lies along the scanner's z axis,
which in DICOM patient coordinates (LPS, and so in RAS) is the S axis for every standard patient
position; its direction in the array's axes is ``D^T (0, 0, 1)``, ``D`` the affine's direction
cosines. The sign is irrelevant to the dipole kernel.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

#: Largest relative deviation of echo spacings still called uniform.
UNIFORM_SPACING_RTOL = 0.01


def b0_direction(affine: np.ndarray) -> np.ndarray:
    """Unit vector of B0 (scanner z = world S) in the array axes of an image with this affine."""
    a = np.asarray(affine, float)[:3, :3]
    norms = np.linalg.norm(a, axis=0)
    if np.any(norms <= 0) or not np.all(np.isfinite(a)):
        raise ValueError("the image's affine is degenerate (a zero or non-finite voxel axis)")
    d = a / norms
    b = d.T @ np.array([0.0, 0.0, 1.0])
    return b / np.linalg.norm(b)


def phase_to_radians(phase: np.ndarray, what: str = "phase") -> np.ndarray:
    """Wrapped phase in rad from what scanners store: already radians (within +-pi), Siemens'
    -4096..4095 (12-bit signed after rescale) or 0..4095 (unsigned). Anything else is refused."""
    p = np.asarray(phase, dtype=np.float64)
    lo, hi = float(np.nanmin(p)), float(np.nanmax(p))
    if lo >= -math.pi - 1e-3 and hi <= math.pi + 1e-3:
        return p.astype(np.float32)
    if lo >= -4096.5 and hi <= 4095.5:
        if lo >= -0.5:  # unsigned 0..4095
            return ((p / 4096.0) * 2 * math.pi - math.pi).astype(np.float32)
        return (p / 4096.0 * math.pi).astype(np.float32)
    raise ValueError(f"{what} values span {lo:g}..{hi:g}: neither radians (+-pi) nor a scanner's 12-bit phase scale (-4096..4095 or 0..4095)")


@dataclass
class MultiEcho:
    """One multi-echo GRE acquisition.

    Attributes:
        magnitude: (i, j, k, E) magnitudes (a.u.).
        phase: (i, j, k, E) wrapped phases (rad), or None when no phase was found.
        affine: voxel -> RAS+ mm.
        echo_times_ms: E echo times (ms), increasing.
        field_strength_t: B0 (T), or None when the files do not say.
        source: where it came from (paths, series UIDs), for the sidecar.
    """

    magnitude: np.ndarray
    phase: np.ndarray | None
    affine: np.ndarray
    echo_times_ms: list[float]
    field_strength_t: float | None
    source: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        e = self.magnitude.shape[-1] if self.magnitude.ndim == 4 else 0
        if self.magnitude.ndim != 4 or e < 1:
            raise ValueError(f"the magnitudes must be 4D (i, j, k, echoes), got shape {self.magnitude.shape}")
        if len(self.echo_times_ms) != e:
            raise ValueError(f"{e} magnitude echoes but {len(self.echo_times_ms)} echo times")
        te = np.asarray(self.echo_times_ms, float)
        if not np.all(np.isfinite(te)) or np.any(te <= 0) or np.any(np.diff(te) <= 0):
            raise ValueError(f"echo times must be positive and increasing, got {self.echo_times_ms} ms")
        if self.phase is not None and self.phase.shape != self.magnitude.shape:
            raise ValueError(f"the phase series has shape {self.phase.shape}, the magnitudes {self.magnitude.shape}: they must come from one acquisition")

    @property
    def echoes(self) -> int:
        return int(self.magnitude.shape[-1])

    @property
    def uniform_spacing(self) -> bool:
        d = np.diff(np.asarray(self.echo_times_ms, float))
        return bool(d.size == 0 or np.all(np.abs(d - d.mean()) <= UNIFORM_SPACING_RTOL * d.mean()))

    def sidecar(self, task: str) -> dict[str, Any]:
        out: dict[str, Any] = {
            "task": task,
            "modality": "mGRE",
            "echo_times_ms": [round(float(t), 6) for t in self.echo_times_ms],
            "B0_dir": [round(float(x), 6) + 0.0 for x in b0_direction(self.affine)],
            "voxel_size_mm": [round(float(x), 6) for x in np.linalg.norm(np.asarray(self.affine)[:3, :3], axis=0)],
            "echo_spacing_uniform": self.uniform_spacing,
            "source": self.source,
        }
        if self.field_strength_t is not None:
            out["B0_T"] = float(self.field_strength_t)
        return out

    def qsm_raw_study(self, mask: np.ndarray | None = None) -> tuple[np.ndarray, dict[str, Any]]:
        """The ``qsm_raw`` input (4D float32: E magnitudes, E phases in rad, brain mask) and sidecar.

        ``mask``: a brain mask on this grid; None derives one from the first echo's magnitude
        (:func:`qmri.io.brain_mask.magnitude_mask`)."""
        if self.phase is None:
            raise ValueError("no phase images were found: QSM needs the phase series of the multi-echo GRE (part-phase in BIDS, ImageType P in DICOM)")
        if mask is None:
            from .brain_mask import magnitude_mask

            mask = magnitude_mask(self.magnitude[..., 0])
        mask = np.asarray(mask)
        if mask.shape != self.magnitude.shape[:3]:
            raise ValueError(f"the brain mask has shape {mask.shape}, the images {self.magnitude.shape[:3]}")
        data = np.concatenate([self.magnitude, self.phase, (mask > 0)[..., None]], axis=-1).astype(np.float32)
        e = self.echoes
        meta = self.sidecar("qsm_raw")
        meta["channels"] = [f"mag_e{i + 1}" for i in range(e)] + [f"phase_e{i + 1}" for i in range(e)] + ["brain_mask"]
        meta["units"] = ["a.u."] * e + ["rad"] * e + ["1"]
        return data, meta
