"""Network weights that are reloaded when their file changes (a newly trained model is used at once)."""

from __future__ import annotations

import hashlib
import threading
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable

from . import compute


class ReloadingWeights:
    """Lazily load ``path`` with ``loader(path, device=...)`` onto this process's compute device
    (:func:`qmri.networks.compute.device`); load again whenever the file's mtime or the device changes."""

    def __init__(self, path: str | Path, loader: Callable[[Path], Any], what: str):
        self.path = Path(path)
        self.loader = loader
        self.what = what
        self._stamp = None
        self._value = None
        self._lock = threading.Lock()

    def exists(self) -> bool:
        return self.path.exists()

    def get(self):
        if not self.path.exists():
            raise ValueError(f"no trained {self.what} weights at {self.path}: train them first (qmri train, or the server's trainer)")
        with self._lock:
            dev = compute.device()
            stamp = (self.path.stat().st_mtime_ns, str(dev))
            if stamp != self._stamp:
                self._value = self.loader(self.path, device=dev)
                self._stamp = stamp
            return self._value


def weights_identity(path: str | Path | None) -> dict | None:
    """``{"file": name, "sha256": hex}`` of a weights file (the identity results carry), or None.
    Hashed once per file version (path, size, modification time): a published model gets its own."""
    if path is None or not Path(path).is_file():
        return None
    st = Path(path).stat()
    return {"file": Path(path).name, "sha256": _sha256(str(Path(path).resolve()), st.st_size, st.st_mtime_ns)}


@lru_cache(maxsize=64)
def _sha256(path: str, size: int, mtime_ns: int) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()
