"""Where the shipped network weights live: the MONAI Label app's model folder, found from the package.

Every default weights path of the command line (``qmri bench``'s ``--weights``, ``qmri train``'s
``--out``) comes from :func:`shipped`, so it does not depend on the working directory. The folder is
``apps/qmri/model`` of the checkout this package is installed from (editable install:
``lib/qmri`` -> the repository root is two folders up), or ``$QMRI_MODEL_DIR`` when that is set.
Outputs that are not weights (``bench-results``, ``sample-data``) stay relative to the working
directory, where a user wants them.
"""

from __future__ import annotations

import os
from pathlib import Path

#: Environment variable that overrides the model folder.
MODEL_DIR_ENV = "QMRI_MODEL_DIR"

#: Shipped network -> its weights under the model folder (``oefnet`` is a folder of checkpoints).
NETWORKS: dict[str, str] = {
    "qsmnet": "qsmnet/qsmnet.pt",
    "synthnet": "synthnet/synthnet.pt",
    "pvcnet": "pvcnet/pvcnet.pt",
    "pvcnet_fwhm": "pvcnet_fwhm/pvcnet_fwhm.pt",
    "oefnet": "oefnet",
}


def model_dir() -> Path:
    """The app's model folder: ``$QMRI_MODEL_DIR`` if set, else ``<repository>/apps/qmri/model``."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "apps" / "qmri" / "model"


def shipped(network: str) -> Path:
    """Absolute path of a shipped network's weights (a file; ``oefnet``: the folder)."""
    if network not in NETWORKS:
        raise ValueError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
    return model_dir() / NETWORKS[network]
