"""PNG montage of a phantom subject: T1w, tissue labels and lesions in three orthogonal planes."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from .labels import LESIONS, NAMES, N_CLASSES
from .phantom import Subject

# One colour per tissue label (air, csf, gm, wm, 7 deep nuclei, blood, bone, soft tissue, sinus air).
LABEL_COLOURS = (
    np.array(
        [
            [0, 0, 0],
            [70, 130, 230],
            [200, 200, 200],
            [250, 250, 250],
            [230, 160, 60],
            [220, 120, 40],
            [200, 80, 80],
            [120, 200, 120],
            [200, 40, 40],
            [120, 60, 160],
            [240, 200, 90],
            [160, 0, 0],
            [240, 240, 180],
            [210, 150, 130],
            [40, 40, 90],
        ],
        dtype=float,
    )
    / 255.0
)
LESION_COLOURS = {1: (0.1, 0.8, 0.9), 2: (0.9, 0.1, 0.1), 3: (1.0, 1.0, 0.2), 4: (1.0, 0.4, 0.9)}


def _planes(vol: np.ndarray, centre: tuple[int, int, int]) -> list[np.ndarray]:
    """Axial, coronal and sagittal slices through ``centre``, oriented for display (RAS arrays)."""
    i, j, k = centre
    return [np.rot90(vol[:, :, k]), np.rot90(vol[:, j, :]), np.rot90(vol[i, :, :])]


def save_montage(subject: Subject, path: str | Path) -> Path:
    """Write a 3 x 3 PNG: rows axial/coronal/sagittal; columns T1w, labels, labels + lesions."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    brain = subject.brain_mask
    if subject.lesions.any():
        centre = tuple(int(v) for v in np.argwhere(subject.lesions > 0).mean(0))
    else:
        centre = tuple(int(v) for v in np.argwhere(brain).mean(0))
    rgb = LABEL_COLOURS[np.clip(subject.labels, 0, N_CLASSES - 1)]
    rgb_les = rgb.copy()
    for code, col in LESION_COLOURS.items():
        rgb_les[subject.lesions == code] = col
    fig, axes = plt.subplots(3, 3, figsize=(10, 10), facecolor="black")
    cols = [("T1w (template units)", _planes(subject.t1w, centre), "gray"), ("tissue labels", _planes(rgb, centre), None), ("labels + lesions", _planes(rgb_les, centre), None)]
    for c, (title, planes, cmap) in enumerate(cols):
        for r, img in enumerate(planes):
            ax = axes[r, c]
            ax.imshow(img, cmap=cmap, aspect="equal", interpolation="nearest")
            ax.set_axis_off()
            if r == 0:
                ax.set_title(title, color="white")
    handles = [Patch(color=LABEL_COLOURS[i], label=NAMES[i]) for i in range(1, N_CLASSES)]
    handles += [Patch(color=col, label=f"lesion: {LESIONS[code]}") for code, col in LESION_COLOURS.items()]
    fig.legend(handles=handles, loc="lower center", ncol=5, fontsize=7, facecolor="black", labelcolor="white")
    lesion_names = ", ".join(l["type"] for l in subject.lesion_list) or "none"
    fig.suptitle(f"{subject.subject_id} (seed {subject.seed}, {subject.voxel_size_mm:g} mm) lesions: {lesion_names}", color="white")
    fig.tight_layout(rect=(0, 0.08, 1, 0.96))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=90, facecolor="black")
    plt.close(fig)
    return path
