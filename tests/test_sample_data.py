"""The bundled sample data: layout, geometry, size, and that the shipped command reproduces it."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np

from conftest import SAMPLE
from qmri.anatomy.labels import LABEL
from qmri.io.study import LABEL_DIR, read_sidecar


def test_layout_and_geometry():
    images = sorted((SAMPLE / "studies").glob("*.nii.gz"))
    assert len(images) >= 3
    for p in images:
        meta = read_sidecar(p, required=("task", "subject", "modality"))
        img = nib.load(p)
        lab = nib.load(SAMPLE / "studies" / LABEL_DIR / p.name)
        assert lab.shape[:3] == img.shape[:3]
        assert np.allclose(lab.affine, img.affine)
        assert np.allclose(img.header.get_zooms()[:3], meta["voxel_size_mm"])


def test_total_size_under_limit():
    total = sum(f.stat().st_size for f in SAMPLE.rglob("*") if f.is_file())
    assert total < 60e6, f"sample-data is {total / 1e6:.1f} MB"


def test_regenerating_reproduces_shipped_subject():
    """Subject sub-1001 regenerated from its recorded seed equals the shipped labels and lesions."""
    from qmri.anatomy.phantom import make_subject

    meta = json.loads((SAMPLE / "anatomy" / "sub-1001" / "subject.json").read_text())
    s = make_subject(meta["seed"], meta["voxel_size_mm"], subject_id="sub-1001")
    assert s.lesion_list == meta["lesions"] and s.amyloid_positive == meta["amyloid_positive"]
    shipped = nib.load(SAMPLE / "anatomy" / "sub-1001" / "labels.nii.gz")
    assert np.allclose(shipped.affine, s.affine)
    agree = np.mean(np.asarray(shipped.dataobj) == s.labels)
    assert agree > 0.999, agree  # identical up to floating-point ties at class boundaries
    assert (s.labels == LABEL["venous_blood"]).sum() > 0
