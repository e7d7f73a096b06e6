"""A brain mask from a GRE magnitude image, for inputs that come without one.

Otsu's threshold (scikit-image) on the magnitude, capped at a fifth of its 99th percentile (Otsu
alone splits grey from white matter when the field of view holds little background), the largest
connected component, holes filled (scipy.ndimage). This is a head/brain-signal mask: on real data with skull and scalp it includes
them; give a skull-stripped mask (BIDS ``desc-brain_mask``, or ``--mask``) where that matters.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

#: Tissue is brighter than this fraction of the 99th-percentile magnitude (GRE at any echo used here).
RELATIVE_FLOOR = 0.2


def magnitude_mask(magnitude: np.ndarray) -> np.ndarray:
    """Boolean mask of the signal-bearing region of a 3D magnitude image."""
    m = np.asarray(magnitude, dtype=np.float64)
    if m.ndim != 3:
        raise ValueError(f"a 3D magnitude image is needed for the mask, got shape {m.shape}")
    finite = np.isfinite(m)
    if not finite.any() or np.ptp(m[finite]) == 0:
        raise ValueError("the magnitude image is constant: no brain can be found in it")
    t = min(threshold_otsu(m[finite]), RELATIVE_FLOOR * float(np.percentile(m[finite], 99)))
    fg = finite & (m > t)
    labels, n = ndimage.label(fg)
    if n == 0:
        raise ValueError("no signal above the background was found in the magnitude image")
    sizes = ndimage.sum_labels(np.ones_like(labels), labels, index=np.arange(1, n + 1))
    largest = labels == (1 + int(np.argmax(sizes)))
    return ndimage.binary_fill_holes(largest)
