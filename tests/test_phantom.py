"""The phantom anatomy: plausible tissues, reproducible deformations, correct affines."""

from __future__ import annotations

import numpy as np
import pytest

from qmri.anatomy.labels import DEEP_GM_LABELS, LABEL, LESION_CODE, N_CLASSES, NAMES
from qmri.anatomy.phantom import Subject, make_subject
from qmri.anatomy.template import NUCLEI_MNI


def test_tissue_volumes_plausible(small_subject):
    s = small_subject
    v = s.tissue_volumes_ml()
    brain = v["csf"] + v["cortical_gm"] + v["wm"] + sum(v[NAMES[l]] for l in DEEP_GM_LABELS)
    # MNI152 2009a is an enlarged average brain (~1.9 l intracranial); the warp scales it by <= 8 %.
    assert 1450 < brain < 2350
    gm = v["cortical_gm"] + sum(v[NAMES[l]] for l in DEEP_GM_LABELS)
    assert 0.40 < gm / brain < 0.65
    assert 0.25 < v["wm"] / brain < 0.45
    assert 0.08 < v["csf"] / brain < 0.25
    assert 300 < v["bone"] < 1000  # skull shell ~6.5 mm thick
    assert 5 < v["venous_blood"] < 40  # dural sinuses
    assert v["sinus_air"] > 0.3
    for lab in DEEP_GM_LABELS:
        assert v[NAMES[lab]] > 0.1, NAMES[lab]


def test_probseg_and_labels_consistent(small_subject):
    s = small_subject
    assert s.probseg.shape == (*s.shape, N_CLASSES)
    np.testing.assert_allclose(s.probseg.sum(-1), 1.0, atol=1e-5)
    assert np.array_equal(s.labels, np.argmax(s.probseg, -1))
    # partial volume exists at tissue boundaries (4 mm voxels from a 2 mm working grid)
    assert 0.05 < np.mean(s.probseg.max(-1) < 0.99) < 0.8
    # the head is surrounded by air on every face of the field of view
    for face in (s.labels[0], s.labels[-1], s.labels[:, 0], s.labels[:, -1], s.labels[:, :, -1]):
        assert np.all(face == LABEL["air"])


def test_same_seed_reproducible_other_seed_differs(small_subject):
    again = make_subject(7, voxel_size_mm=4.0, lesions="all", amyloid_positive=True, supersample=2)
    assert np.array_equal(again.labels, small_subject.labels)
    assert np.array_equal(again.lesions, small_subject.lesions)
    other = make_subject(8, voxel_size_mm=4.0, lesions="all", amyloid_positive=True, supersample=2)
    assert other.warp != small_subject.warp
    a, b = small_subject.brain_mask, other.brain_mask
    dice = 2 * (a & b).sum() / (a.sum() + b.sum())
    assert dice < 0.97  # different geometry
    assert dice > 0.75  # but still the same anatomy


@pytest.mark.parametrize("res", [1.0, 2.0])
def test_affine_places_nuclei_at_mni_positions(res):
    """Without deformation, the putamen and thalamus centroids land at their MNI coordinates."""
    s = make_subject(0, voxel_size_mm=res, lesions="none", deform=False)
    assert np.allclose(np.abs(np.diag(s.affine)[:3]), res)
    for name in ("putamen", "thalamus"):
        ijk = np.argwhere(s.labels == LABEL[name])
        xyz = ijk @ s.affine[:3, :3].T + s.affine[:3, 3]
        for side in (1, -1):
            half = xyz[np.sign(xyz[:, 0]) == side]
            expected = np.array(NUCLEI_MNI[name][0]) * np.array([side, 1, 1])
            assert np.linalg.norm(half.mean(0) - expected) < 2.0, (name, side, half.mean(0), expected)


def test_lesions_recorded(small_subject):
    s = small_subject
    types = {l["type"] for l in s.lesion_list}
    assert types == {"infarct", "haemorrhage", "calcification", "amyloid_positive_cortex"}
    for l in s.lesion_list:
        assert (s.lesions == LESION_CODE[l["type"]]).sum() > 0, l
    assert np.all(s.brain_mask[s.lesions > 0])
    amy = s.lesions == LESION_CODE["amyloid_positive_cortex"]
    assert np.all(s.labels[amy] == LABEL["cortical_gm"])
    none = make_subject(7, voxel_size_mm=4.0, lesions="none", amyloid_positive=False, supersample=2)
    assert not none.lesions.any() and none.lesion_list == []


def test_bad_lesion_name_is_refused():
    with pytest.raises(ValueError, match="unknown lesion type"):
        make_subject(1, voxel_size_mm=4.0, lesions=("tumour",), supersample=2)


def test_save_load_roundtrip(small_subject, tmp_path):
    import nibabel as nib

    d = small_subject.save(tmp_path)
    back = Subject.load(d)
    assert np.array_equal(back.labels, small_subject.labels)
    assert np.allclose(back.affine, small_subject.affine)
    np.testing.assert_allclose(back.probseg, small_subject.probseg, atol=2.5 / 255)
    assert back.lesion_list == small_subject.lesion_list
    hdr = nib.load(d / "labels.nii.gz").header
    assert np.allclose(hdr.get_zooms()[:3], 4.0) and hdr.get_xyzt_units()[0] == "mm"


def test_cli_writes_subject_and_montage(tmp_path):
    from PIL import Image

    from qmri.cli import main

    assert main(["phantom", "--subjects", "1", "--resolution", "4", "--seed", "3", "--out", str(tmp_path), "--montage"]) == 0
    d = tmp_path / "sub-003"
    for f in ("T1w.nii.gz", "labels.nii.gz", "probseg.nii.gz", "lesions.nii.gz", "subject.json", "montage.png"):
        assert (d / f).exists(), f
    img = np.asarray(Image.open(d / "montage.png").convert("RGB"))
    assert img.shape[0] > 500 and img.shape[1] > 500
    assert (img.max(-1) > 100).mean() > 0.05  # anatomy drawn, not a blank canvas
