"""The phantom's tissue label table and lesion codes.

Every phantom subject carries one integer tissue label per voxel (``labels.nii.gz``), a 4D
probability map over the same classes (``probseg.nii.gz``, channels last, voxel sums 1) and a
separate lesion map (``lesions.nii.gz``) with the codes in :data:`LESIONS`. The physics forward
models of every task (QQ parameters, susceptibility, PET activity, HU, T2w contrast) map these
labels to tissue properties, so this table is the single source of truth for label numbers.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Tissue:
    """One tissue class of the phantom."""

    label: int
    name: str
    description: str
    brain: bool  # inside the intracranial brain mask used by QSM/OEF/PVC
    grey_matter: bool = False  # counts as grey matter for GM/WM priors and PET


TISSUES: tuple[Tissue, ...] = (
    Tissue(0, "air", "air outside the head", brain=False),
    Tissue(1, "csf", "cerebrospinal fluid: ventricles and sulci", brain=True),
    Tissue(2, "cortical_gm", "cortical and cerebellar grey matter", brain=True, grey_matter=True),
    Tissue(3, "wm", "white matter", brain=True),
    Tissue(4, "caudate", "caudate nucleus", brain=True, grey_matter=True),
    Tissue(5, "putamen", "putamen", brain=True, grey_matter=True),
    Tissue(6, "globus_pallidus", "globus pallidus", brain=True, grey_matter=True),
    Tissue(7, "thalamus", "thalamus", brain=True, grey_matter=True),
    Tissue(8, "red_nucleus", "red nucleus", brain=True, grey_matter=True),
    Tissue(9, "substantia_nigra", "substantia nigra", brain=True, grey_matter=True),
    Tissue(10, "dentate", "dentate nucleus of the cerebellum", brain=True, grey_matter=True),
    Tissue(11, "venous_blood", "dural sinuses (superior sagittal, straight, transverse)", brain=False),
    Tissue(12, "bone", "skull", brain=False),
    Tissue(13, "soft_tissue", "scalp: skin, subcutaneous fat and muscle", brain=False),
    Tissue(14, "sinus_air", "air in the frontal sinus", brain=False),
)

LABEL = {t.name: t.label for t in TISSUES}
NAMES = [t.name for t in TISSUES]
N_CLASSES = len(TISSUES)
BRAIN_LABELS = tuple(t.label for t in TISSUES if t.brain)
GM_LABELS = tuple(t.label for t in TISSUES if t.grey_matter)
DEEP_GM_LABELS = tuple(range(LABEL["caudate"], LABEL["dentate"] + 1))
HEAD_LABELS = tuple(t.label for t in TISSUES if t.name != "air")

# Lesion codes in lesions.nii.gz (0 = no lesion). A subject's lesion list with centres (mm) and
# radii (mm) is also recorded in its subject.json.
LESIONS = {
    0: "none",
    1: "infarct",
    2: "haemorrhage",
    3: "calcification",
    4: "amyloid_positive_cortex",
}
LESION_CODE = {v: k for k, v in LESIONS.items()}
