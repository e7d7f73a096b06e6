"""Atomic file writes: a temporary file in the destination's folder, then ``os.replace``.

A reader (an infer task reloading weights, the datastore's file watcher, a restarted server) sees
either the old file or the whole new one, never a part; a failed write leaves nothing behind.
A process that must end at once (``os._exit``) takes :data:`WRITING` first, so that it never
ends in the middle of a write and leaves a ``.part`` file behind.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import BinaryIO, Callable

#: Held by every write in progress in this process (re-entrant, so a caller may hold it around
#: several writes that belong together).
WRITING = threading.RLock()


def atomic_write(dest: str | Path, fill: Callable[[BinaryIO], None]) -> Path:
    """Write ``dest`` by ``fill(binary file)``; the temporary file is hidden (``.name.*.part``)."""
    dest = Path(dest)
    with WRITING:
        fd, tmp = tempfile.mkstemp(prefix=f".{dest.name}.", suffix=".part", dir=dest.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                fill(out)
            os.replace(tmp, dest)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return dest


def atomic_write_text(dest: str | Path, text: str) -> Path:
    return atomic_write(dest, lambda out: out.write(text.encode()))


def atomic_copy(src: str | Path, dest: str | Path) -> Path:
    def fill(out):
        with open(src, "rb") as inp:
            shutil.copyfileobj(inp, out)

    return atomic_write(dest, fill)
