"""Write the bundled sample data: phantom anatomy, its T1w studies, and studies of every task.

Everything is generated from seeds, so ``qmri sample-data`` reproduces the shipped folder. Subject
``sub-<seed>`` is the same phantom in ``anatomy/`` and in every task study that carries its name.
"""

from __future__ import annotations

from pathlib import Path

from tqdm import tqdm

from ..io.study import write_study
from ..anatomy.labels import TISSUES
from ..anatomy.montage import save_montage
from ..anatomy.phantom import make_subject

SAMPLE_SEED = 1000  # sample subjects are sub-1000, sub-1001, sub-1002


def subject_id(seed: int) -> str:
    return f"sub-{seed:04d}"


def write_anatomy_studies(out: str | Path, subjects: int = 3, seed: int = SAMPLE_SEED, resolution_mm: float = 2.0) -> list[Path]:
    """Phantoms into ``<out>/anatomy/`` and their T1w studies (target: tissue labels) into ``<out>/studies/``."""
    out = Path(out)
    written = []
    for i in tqdm(range(subjects), desc="sample anatomy", unit="subject"):
        s = make_subject(seed + i, resolution_mm, subject_id=subject_id(seed + i))
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


def write_task_studies(out: str | Path, seed: int = SAMPLE_SEED, resolution_mm: float = 2.0) -> list[Path]:
    """A couple of studies per task (compact int16 storage), all from the sample subjects."""
    from .driver import simulate
    from .qsm import tilted_b0

    studies = Path(out) / "studies"
    kw = {"resolution_mm": resolution_mm, "compact": True, "progress": False}
    written = []
    written += simulate("synth", studies, subjects=1, seed=seed, **kw)
    written += simulate("pvc", studies, subjects=2, seed=seed, **kw)
    written += simulate("oef", studies, subjects=1, seed=seed, **kw)
    written += simulate("qsm", studies, subjects=1, seed=seed, **kw)
    written += simulate("qsm", studies, subjects=1, seed=seed + 1, b0_dir=tilted_b0(20.0), raw=False, **kw)
    return written
