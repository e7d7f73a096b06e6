"""Where the shipped network weights live: the MONAI Label app's model folder, found from the package.

Every default weights path of the command line (``qmri bench``'s ``--weights``, ``qmri train``'s
``--out``) is a file under :func:`model_dir` named by the network registry
(:func:`qmri.models.shipped`), so it does not depend on the working directory. The folder is
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


def model_dir() -> Path:
    """The app's model folder: ``$QMRI_MODEL_DIR`` if set, else ``<repository>/apps/qmri/model``."""
    env = os.environ.get(MODEL_DIR_ENV)
    if env:
        return Path(env).expanduser().resolve()
    return Path(__file__).resolve().parents[2] / "apps" / "qmri" / "model"
