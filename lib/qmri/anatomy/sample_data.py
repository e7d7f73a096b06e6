"""Write the bundled sample data: phantom anatomy plus the anatomy studies of the datastore."""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..io.study import write_study
from .labels import TISSUES
from .montage import save_montage
from .phantom import make_subject

SAMPLE_SEED = 1000  # subject i of the sample data has seed SAMPLE_SEED + i


def write_anatomy_studies(out: str | Path, subjects: int = 3, seed: int = SAMPLE_SEED, resolution_mm: float = 2.0) -> list[Path]:
    """Generate ``subjects`` phantoms into ``<out>/anatomy/`` and their T1w studies into ``<out>/studies/``.

    Each T1w study's ``labels/final`` target is the subject's tissue label map. Subject ``i`` has seed
    ``seed + i``: subject 0 has every lesion type and amyloid-positive cortex, subject 1 none and
    amyloid-negative, the rest are drawn.
    """
    out = Path(out)
    written = []
    for i in tqdm(range(subjects), desc="sample subjects", unit="subject"):
        lesions, amyloid = ("all", True) if i == 0 else (("none", False) if i == 1 else ("auto", None))
        s = make_subject(seed + i, resolution_mm, lesions=lesions, amyloid_positive=amyloid, subject_id=f"sub-{i:03d}")
        d = s.save(out / "anatomy")
        save_montage(s, d / "montage.png")
        sidecar = {
            "task": "anatomy",
            "subject": s.subject_id,
            "modality": "T1w",
            "units": "a.u. (MNI152 template intensity)",
            "seed": s.seed,
            "target": {"description": "tissue labels", "labels": {t.label: t.name for t in TISSUES}},
        }
        written.append(write_study(out / "studies", f"{s.subject_id}_T1w", s.t1w, s.affine, sidecar, target=s.labels))
    return written
