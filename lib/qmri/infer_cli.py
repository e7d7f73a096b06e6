"""``qmri infer TASK INPUT``: one task's maps from a NIfTI file, without a server.

Runs the same validated task code as the MONAI Label server (:mod:`qmri.tasks.registry`: the same
:class:`~qmri.tasks.spec.TaskSpec`, input reader, sidecar rules and float-map writer), so a bad
input gets the message the server answers with HTTP 4xx. Writes ``<input>_<task>_<method>.nii.gz``
(float32 maps on the input grid, several maps as channels) and the result JSON beside it (map
names, units, display ranges, method, seconds and the weights' sha256). An existing output is
kept unless ``--overwrite`` is given.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path

import numpy as np

log = logging.getLogger(__name__)


def output_paths(image: Path, task: str, method: str, out_dir: Path) -> tuple[Path, Path]:
    stem = image.name[: -len(".nii.gz")] if image.name.endswith(".nii.gz") else image.stem
    base = out_dir / f"{stem}_{task}_{method}"
    return base.with_name(base.name + ".nii.gz"), base.with_name(base.name + ".json")


def oef_input_from_raw(data: np.ndarray, affine: np.ndarray, meta: dict, chi_method: str | None = None, model_dir=None) -> tuple[np.ndarray, dict, str]:
    """The ``oef`` input (E echo magnitudes + QSM in ppm, 0 outside the brain) of a ``qsm_raw``
    study (E magnitudes, E phases in rad, brain mask): the susceptibility is computed first by the
    ``qsm_raw`` task's ``chi_method`` (its default when None). Returns (data, sidecar, chi method)."""
    from .tasks.registry import task_spec

    raw = task_spec("qsm_raw", model_dir)
    chi_method = chi_method or raw.default_method
    if chi_method not in raw.methods:
        raise ValueError(f"unknown --chi-method '{chi_method}' for the susceptibility; choose from {', '.join(raw.methods)}")
    echoes = len(meta.get("echo_times_ms") or [])
    if data.ndim != 4 or data.shape[-1] != 2 * echoes + 1:
        raise ValueError(f"a qsm_raw study has {2 * echoes + 1} channels (magnitudes, phases, mask) for its {echoes} echo times; this one has shape {data.shape}")
    chi = raw.call(data, affine, meta, chi_method, {})[0].data
    mask = data[..., -1] != 0
    oef = np.concatenate([data[..., :echoes], np.where(mask, chi, 0.0)[..., None]], axis=-1).astype(np.float32)
    return oef, {**{k: v for k, v in meta.items() if k in ("echo_times_ms", "B0_T", "B0_dir")}, "task": "oef"}, chi_method


def infer(
    task: str,
    image: str | Path,
    out_dir: str | Path,
    sidecar: str | Path | None = None,
    method: str | None = None,
    maps=None,
    model_dir=None,
    overwrite: bool = False,
    max_voxels: int | None = None,
    options: dict | None = None,
    chi_method: str | None = None,
) -> tuple[Path, dict]:
    """Run ``task`` on ``image``; returns (maps file, result JSON). ValueError names bad input.
    ``options``: the task's own choices (e.g. ``{"tta": 2}`` for the synthesis tasks). ``oef`` on a
    ``qsm_raw`` study (e.g. from ``qmri import dicom``) first computes its susceptibility by
    ``chi_method`` (:func:`oef_input_from_raw`)."""
    from .io.atomic import atomic_write_text
    from .io.maps import requested_names, select_maps, write_maps
    from .io.nifti_input import DEFAULT_MAX_VOXELS, load_input_volume
    from .io.study import resolve_sidecar
    from .networks import compute
    from .networks.weights import weights_identity
    from .tasks.registry import method_weights, task_spec

    t0 = time.time()
    spec = task_spec(task, model_dir)
    method = method or spec.default_method
    if method not in spec.methods:
        raise ValueError(f"unknown method '{method}' for {task}; choose from {', '.join(spec.methods)}")
    requested_names(list(spec.outputs), maps)  # refuse an unknown map name before any work
    opts = spec.parse_options(options)  # and an unknown option or value
    image = Path(image)
    nii, js = output_paths(image, task, method, Path(out_dir))
    if not overwrite and (nii.exists() or js.exists()):
        raise FileExistsError(f"{nii} already exists: pass --overwrite to replace it, or choose another --out")
    given = Path(sidecar).read_text() if sidecar is not None else None
    data, affine = load_input_volume(image, max_voxels=max_voxels or DEFAULT_MAX_VOXELS)
    meta = resolve_sidecar(image, given, spec.required_sidecar)
    extra = {}
    if task == "oef" and meta.get("task") == "qsm_raw":
        data, meta, extra["chi_method"] = oef_input_from_raw(data, affine, meta, chi_method, model_dir)
    elif chi_method is not None:
        raise ValueError("--chi-method applies to oef on a qsm_raw study (magnitudes and phases), or with --bids")
    result_maps = select_maps(spec.call(data, affine, meta, method, opts), maps)
    primary, result = write_maps(result_maps, affine, data.shape[:3], nii)
    result.update({**extra, "task": task, "method": method, "input": image.name, "weights": weights_identity(method_weights(task, method, model_dir)), "options": opts, "device": str(compute.device()), "seconds": round(time.time() - t0, 3)})
    atomic_write_text(js, json.dumps(result, indent=1))
    log.info("%s %s: %d map(s) in %.1f s -> %s", task, method, len(result_maps), result["seconds"], primary)
    return Path(primary), result
