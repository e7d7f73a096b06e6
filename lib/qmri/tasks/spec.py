"""What a task is: its inputs, outputs (units, display range), methods, and the function that runs it."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from ..classical.bounding_box import mask_box
from ..io.maps import QuantMap
from ..io.nifti_input import check_affine

RunFn = Callable[[np.ndarray, np.ndarray, dict[str, Any], str], list[QuantMap]]


@dataclass(frozen=True)
class TaskSpec:
    """One task of the product.

    Attributes:
        name: infer task name on the server (e.g. ``"qsm"``).
        description: one line for people.
        inputs: input name -> what it must be (array layout, units, sidecar keys), and ``slots``: the
            input volumes a client stacks into the image (:func:`qmri.io.display.slot`).
        outputs: map name -> {"units": str, "display_range": [lo, hi], "display": the display hint
            (:func:`qmri.io.display.display`)}.
        methods: selectable methods; ``default_method`` is used when a request names none.
        required_sidecar: sidecar keys without which the task refuses to run.
        bytes_per_voxel: peak memory of the task's most demanding method per voxel of the input
            grid (a 4D input's channels included), in bytes: ``qmri bench memory`` measures it
            (``bench-results/bench_memory.md``) and the task modules round it up by about a quarter;
            a server refuses inputs whose estimate exceeds its memory budget before any work.
            0: not measured.
        run: ``run(image, affine, sidecar, method, **options) -> [QuantMap, ...]``; raises
            ValueError naming the problem for bad input.
        memory: method -> (fixed MiB, bytes per voxel), measured at 2 mm (``qmri bench memory``) and
            on a 1 mm 256 x 256 x 200 input whose mask fills the grid (the worst case), for the
            methods whose cost does not grow in proportion (cropping, windows); see :meth:`estimate_mb`.
        networks: the task's :class:`~qmri.networks.weights.ReloadingWeights` (see :meth:`warm_up`).
        options: per-request choices beside the method, ``{name: {"choices", "default", "help"}}``
            (e.g. the synthesis tasks' test-time augmentation ``tta``); :meth:`call` checks them.
        regions: ``regions(image, affine, sidecar, labels) -> [dict, ...]``, the task's value for
            each labelled region of an integer label map on the input's grid (None: the task has no
            regional analysis; the server then refuses a label).
    """

    name: str
    description: str
    inputs: dict[str, Any]
    outputs: dict[str, dict[str, Any]]
    methods: tuple[str, ...]
    default_method: str
    run: RunFn
    required_sidecar: tuple[str, ...] = field(default_factory=tuple)
    bytes_per_voxel: float = 0.0
    options: dict[str, dict[str, Any]] = field(default_factory=dict)
    networks: tuple = ()
    memory: dict[str, tuple[float, float]] = field(default_factory=dict)
    regions: Callable[..., list[dict]] | None = None

    def estimate_mb(self, method: str, voxels: int) -> float:
        """Peak memory (MiB) ``method`` needs for an input of ``voxels`` voxels (first three axes):
        :attr:`memory`'s ``fixed MiB + bytes per voxel`` for a method measured at two sizes, else
        :attr:`bytes_per_voxel` per voxel (0 when neither is known)."""
        if method in self.memory:
            fixed_mb, per_voxel = self.memory[method]
            return fixed_mb + voxels * per_voxel / 2**20
        return voxels * self.bytes_per_voxel / 2**20

    def warm_up(self) -> list[str]:
        """Load every network of the task whose weights exist (the server calls this at start, so
        that the first request does not pay for it); returns what was loaded."""
        loaded = []
        for net in self.networks:
            if net.exists():
                net.get()
                loaded.append(net.what)
        return loaded

    def parse_options(self, given: dict[str, Any] | None) -> dict[str, Any]:
        """The request's task options (``{name: value}``) checked against :attr:`options`, defaults
        filled in; ValueError naming an unknown option or a value outside its choices."""
        given = dict(given or {})
        unknown = sorted(set(given) - set(self.options))
        if unknown:
            raise ValueError(f"option(s) {', '.join(repr(str(k)[:40]) for k in unknown)} not accepted by {self.name}; options: {', '.join(self.options) or 'none'}")
        out = {}
        for name, o in self.options.items():
            v = given.get(name, o["default"])
            kind = type(o["default"])
            try:
                v = kind(v) if not isinstance(v, bool) and str(v).strip() != "" else None
            except (TypeError, ValueError):
                v = None
            if v is None or v not in o["choices"]:
                raise ValueError(f"option {name} must be one of {', '.join(map(str, o['choices']))}, got {str(given.get(name))[:40]!r}")
            out[name] = v
        return out

    def call(self, image: np.ndarray, affine: np.ndarray, sidecar: dict[str, Any], method: str, options: dict[str, Any] | None = None) -> list[QuantMap]:
        """:attr:`run` with the task options checked (see :meth:`parse_options`)."""
        opts = self.parse_options(options)
        return self.run(image, affine, sidecar, method, **opts) if opts else self.run(image, affine, sidecar, method)


#: Voxel sizes (mm) the tasks accept: head images from 0.1 mm (high-resolution MR) to 20 mm (thick
#: slices). Smaller values are usually metres or micrometres mistaken for mm, and would make the
#: kernels in voxels (V-SHARP spheres, PSFs) enormous.
VOXEL_SIZE_RANGE_MM = (0.1, 20.0)


def voxel_size(affine: np.ndarray) -> tuple[float, float, float]:
    """Voxel size (mm, to 1e-6 mm) per array axis from the affine's column norms; ValueError for a non-finite
    or singular affine (see :func:`qmri.io.nifti_input.check_affine`) or a voxel size outside
    :data:`VOXEL_SIZE_RANGE_MM`."""
    # rounded to 1e-6 mm: an affine stored as float32 (NIfTI sform, DICOM decimal strings) carries
    # ~1e-7 relative noise, which must not change a padding or crop size computed as ceil(mm / voxel)
    vs = tuple(round(float(v), 6) for v in check_affine(affine))
    lo, hi = VOXEL_SIZE_RANGE_MM
    if not all(lo <= v <= hi for v in vs):
        raise ValueError(f"voxel sizes {[round(v, 6) for v in vs]} mm (from the affine) are outside {lo:g}..{hi:g} mm: is the affine in metres or micrometres instead of mm?")
    return vs


#: Largest extent (mm, every axis) of a brain mask: an adult brain is about 140 x 170 x 130 mm. A
#: mask spanning more is not a brain mask (a whole field of view, noise kept outside the brain), and
#: would make the FFT-based steps run on the whole matrix for many minutes.
MAX_BRAIN_EXTENT_MM = 220.0


def check_brain_extent(mask: np.ndarray, voxel_mm, what: str) -> None:
    """ValueError when ``mask`` spans more than :data:`MAX_BRAIN_EXTENT_MM` along an axis."""
    m = np.asarray(mask, bool)
    box = mask_box(m, 0) or tuple(slice(0, n if m.any() else 0) for n in m.shape)
    ext = [(b.stop - b.start) * float(v) for b, v in zip(box, voxel_mm)]
    if max(ext) > MAX_BRAIN_EXTENT_MM:
        raise ValueError(f"{what} spans {' x '.join(f'{e:.0f}' for e in ext)} mm, more than a brain ({MAX_BRAIN_EXTENT_MM:g} mm on any axis): set the values outside the brain to 0 (or send a brain mask)")


def real_volume(image: np.ndarray, what: str) -> np.ndarray:
    """``image`` as a floating-point array (float32 unless it is float64): refuses complex and
    non-numeric arrays, empty arrays and NaN/Inf values with ValueError naming ``what``."""
    a = np.asarray(image)
    if a.dtype.kind == "c":
        raise ValueError(f"{what} is complex-valued ({a.dtype.name}): send real values (magnitude, phase in rad) as channels")
    if a.dtype.kind not in "biuf":
        raise ValueError(f"{what} must hold real numbers, got data type {a.dtype}")
    if a.size == 0:
        raise ValueError(f"{what} is empty (shape {tuple(a.shape)})")
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32)
    finite = np.isfinite(a)
    if not finite.all():
        raise ValueError(f"{what} contains {int(a.size - np.count_nonzero(finite))} NaN/Inf voxels")
    return a


def require_3d(image: np.ndarray, what: str) -> np.ndarray:
    """``image`` as a 3D real volume (a 4D array with one channel is squeezed); see :func:`real_volume`."""
    image = np.asarray(image)
    if image.ndim == 4 and image.shape[3] == 1:
        image = image[..., 0]
    if image.ndim != 3:
        raise ValueError(f"{what} must be a 3D volume, got an array of shape {tuple(image.shape)}")
    return real_volume(image, what)


def require_channels(image: np.ndarray, n: int, what: str) -> np.ndarray:
    """``image`` as a 4D real volume with ``n`` channels last; see :func:`real_volume`."""
    image = np.asarray(image)
    if image.ndim != 4:
        raise ValueError(f"{what} must be a 4D volume with {n} channels last, got a {image.ndim}D array of shape {tuple(image.shape)}")
    if image.shape[3] != n:
        raise ValueError(f"{what} must have {n} channels, got {image.shape[3]}")
    return real_volume(image, what)
