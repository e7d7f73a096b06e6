"""The server's check of a case sent for training: the trainer's own reader, and its reason."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from conftest import SAMPLE
from qmri.training.training_case import TRAINING_TASKS, check_training_case

STUDIES = SAMPLE / "studies"


def _copy(tmp_path, study, sidecar=None, affine_scale=None):
    img = nib.load(STUDIES / f"{study}.nii.gz")
    lab = nib.load(STUDIES / "labels" / "final" / f"{study}.nii.gz")
    aff = img.affine if affine_scale is None else img.affine @ np.diag([*affine_scale, 1.0])
    nib.save(nib.Nifti1Image(np.asarray(img.dataobj, np.float32), aff), tmp_path / f"{study}.nii.gz")
    nib.save(nib.Nifti1Image(np.asarray(lab.dataobj, np.float32), aff), tmp_path / "label.nii.gz")
    meta = json.loads((STUDIES / f"{study}.json").read_text()) if sidecar is None else sidecar
    (tmp_path / f"{study}.json").write_text(json.dumps(meta))
    return tmp_path / f"{study}.nii.gz", tmp_path / "label.nii.gz"


def test_sample_studies_are_usable_training_cases(tmp_path):
    for study, task in (("sub-1000_qsm", "qsm"), ("sub-1000_pet", "pvc"), ("sub-1000_t2w", "synthetic_ct")):
        d = tmp_path / study
        d.mkdir()
        check_training_case(task, *_copy(d, study))


@pytest.mark.parametrize(
    "task, sidecar, scale, message",
    [
        ("qsm", {"B0_dir": [0, 0, 1]}, None, "sidecar names no task, so the qsm trainer would skip it"),
        ("qsm", {"task": "oef", "B0_dir": [0, 0, 1]}, None, "names task 'oef'"),
        ("qsm", None, (1.0, 1.0, 1.5), "anisotropic voxels"),
        ("qsm_raw", None, None, "no trainer learns from 'qsm_raw' studies"),
    ],
)
def test_a_case_the_trainer_would_skip_is_refused_with_the_reason(tmp_path, task, sidecar, scale, message):
    with pytest.raises(ValueError, match=message.replace("(", r"\(")):
        check_training_case(task, *_copy(tmp_path, "sub-1000_qsm", sidecar, scale))


def test_every_training_task_has_a_reader():
    import importlib

    for module, fn in TRAINING_TASKS.values():
        assert callable(getattr(importlib.import_module(module), fn))
