"""``qmri infer TASK --bids DATASET``: a task over every matching acquisition of a BIDS dataset,
written as BIDS derivatives (:mod:`qmri.io.bids_derivatives`) with the server's task code.

Inputs per task: ``qsm_raw`` from each multi-echo GRE (magnitude + phase, brain mask from the
dataset or from the magnitude); ``oef`` from each multi-echo GRE's magnitudes plus its susceptibility
derivative (run ``qsm_raw`` first); ``synthetic_ct`` from ``T2w``, ``synthetic_mr`` from ``ct``,
``pvc`` from ``pet`` images (PSF from the PET JSON's ``psf_fwhm_mm``). The run is resumable: an
acquisition whose maps and JSON all exist is skipped (each map is written to a temporary name and
renamed, its JSON last); one acquisition's bad input is reported and the others go on.
"""

from __future__ import annotations

import json
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from tqdm import tqdm

log = logging.getLogger(__name__)

#: Image suffix and BIDS datatype of the single-image tasks.
IMAGE_TASKS = {"synthetic_ct": ("T2w", "anat"), "synthetic_mr": ("ct", "ct"), "pvc": ("pet", "pet")}


@dataclass
class BidsRun:
    """What a run did: acquisitions done, skipped (already done) and failed (with the reason)."""

    done: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    outputs: list[Path] = field(default_factory=list)


@dataclass
class Job:
    name: str
    subject: str
    session: str | None
    entities: dict[str, str]
    datatype: str
    load: Any  # () -> (data, affine, sidecar, sources)


def _jobs(dataset: Path, task: str, chi_method: str | None) -> list[Job]:
    from .io import bids_input as bi
    from .io.bids_derivatives import derivatives_root

    if task in ("qsm_raw", "oef"):
        jobs = []
        for acq in bi.find_megre(dataset):

            def load(acq=acq):
                me = bi.read_megre(acq, dataset)
                if task == "qsm_raw":
                    data, meta = me.qsm_raw_study(bi.read_mask(acq, me.magnitude.shape[:3], me.affine))
                    return data, me.affine, meta, me.source["bids"]
                folder = derivatives_root(dataset) / f"sub-{acq.subject}" / (f"ses-{acq.session}" if acq.session else "") / "anat"
                pattern = f"{acq.name}_desc-{chi_method or '*'}_Chimap.nii.gz"
                found = sorted(folder.glob(pattern))
                if not found:
                    raise ValueError(f"no susceptibility map {pattern} in {folder}: run 'qmri infer qsm_raw --bids {dataset}' first")
                import nibabel as nib

                chi = nib.load(str(found[0]))
                if chi.shape != me.magnitude.shape[:3] or not np.allclose(chi.affine, me.affine, atol=1e-3):
                    raise ValueError(f"{found[0].name} is not on the grid of the echoes")
                data = np.concatenate([me.magnitude, np.asarray(chi.dataobj, dtype=np.float32)[..., None]], axis=-1)
                meta = {k: v for k, v in me.sidecar("oef").items() if k in ("task", "echo_times_ms", "B0_T", "B0_dir")}
                return data, me.affine, meta, me.source["bids"] + [str(found[0].relative_to(dataset))]

            jobs.append(Job(acq.name, acq.subject, acq.session, acq.entities, "anat", load))
        return jobs
    if task in IMAGE_TASKS:
        suffix, datatype = IMAGE_TASKS[task]
        jobs = []
        for path in bi.find_images(dataset, suffix):
            ents, _ = bi.parse_name(path)

            def load(path=path):
                data, affine, meta = bi.read_image(path, dataset)
                return data, affine, {k: v for k, v in meta.items() if k == "psf_fwhm_mm"}, meta["source"]["bids"]

            jobs.append(Job(bi.prefix(ents), ents.get("sub", "?"), ents.get("ses"), ents, datatype, load))
        return jobs
    raise ValueError(f"task '{task}' has no BIDS input (a local field map is not a raw BIDS image); choose from qsm_raw, oef, {', '.join(IMAGE_TASKS)}")


def _write_map(m, affine, shape, path: Path, sidecar: dict) -> None:
    from .io.atomic import atomic_write_text
    from .io.maps import write_maps

    path.parent.mkdir(parents=True, exist_ok=True)
    part = path.with_name(f".{path.name[: -len('.nii.gz')]}.part.nii.gz")
    try:
        write_maps([m], affine, shape, part)
        os.replace(part, path)
    finally:
        part.unlink(missing_ok=True)
    atomic_write_text(path.with_name(path.name[: -len(".nii.gz")] + ".json"), json.dumps(sidecar, indent=2))


def infer_bids(dataset: str | Path, task: str, method: str | None = None, model_dir=None, overwrite: bool = False, options: dict | None = None, chi_method: str | None = None) -> BidsRun:
    """Run ``task`` over the dataset; see the module docstring."""
    import qmri

    from .io.bids_derivatives import map_path, map_sidecar, write_dataset_description
    from .networks.weights import weights_identity
    from .tasks.registry import method_weights, task_spec

    dataset = Path(dataset).expanduser()
    spec = task_spec(task, model_dir)
    method = method or spec.default_method
    if method not in spec.methods:
        raise ValueError(f"unknown method '{method}' for {task}; choose from {', '.join(spec.methods)}")
    opts = spec.parse_options(options)
    jobs = _jobs(dataset, task, chi_method)
    if not jobs:
        raise ValueError(f"no input for {task} in the BIDS dataset {dataset}")
    write_dataset_description(dataset, getattr(qmri, "__version__", "0"))
    weights = weights_identity(method_weights(task, method, model_dir))
    run = BidsRun()
    for job in tqdm(jobs, desc=f"{task} ({method}) over {dataset.name}", unit="acq"):
        paths = {name: map_path(dataset, job.subject, job.session, job.entities, job.datatype, method, name) for name in spec.outputs}
        if not overwrite and all(p.exists() and p.with_name(p.name[: -len(".nii.gz")] + ".json").exists() for p in paths.values()):
            run.skipped.append(job.name)
            continue
        t0 = time.time()
        try:
            data, affine, meta, sources = job.load()
            maps = spec.call(data, affine, meta, method, opts)
        except ValueError as e:
            run.failed[job.name] = str(e)
            log.warning("%s: %s", job.name, e)
            continue
        seconds = time.time() - t0
        for m in maps:
            info = {"name": m.name, "units": m.units, "description": m.description}
            _write_map(m, affine, data.shape[:3], paths[m.name], map_sidecar(info, task, method, weights, sources, seconds))
            run.outputs.append(paths[m.name])
        run.done.append(job.name)
    return run
