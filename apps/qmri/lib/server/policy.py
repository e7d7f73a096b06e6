"""The server's security and capacity settings: the one place their defaults live.

Every setting is read from an environment variable (``QMRI_*``) once, when the server starts, so a
deployment changes them without touching code. The defaults are the safe ones for a workstation:
local clients only, no cross-origin pages, nothing deleted or exported over REST, every request
bounded in size, memory and time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import psutil


def _flag(name: str, default: bool) -> bool:
    v = os.environ.get(name)
    return default if v is None else v.strip().lower() in ("1", "true", "yes", "on")


def _int(name: str, default: int, lo: int = 0) -> int:
    v = os.environ.get(name)
    if v is None or not v.strip():
        return default
    try:
        n = int(v)
    except ValueError:
        raise ValueError(f"environment variable {name} must be an integer, got {v!r}") from None
    if n < lo:
        raise ValueError(f"environment variable {name} must be >= {lo}, got {n}")
    return n


def _list(name: str) -> tuple[str, ...]:
    return tuple(s.strip() for s in os.environ.get(name, "").split(",") if s.strip())


@dataclass(frozen=True)
class ServerPolicy:
    """Limits and switches of the guarded server (environment variable in brackets).

    Attributes:
        cors_origins: browser origins allowed to call the server (``QMRI_CORS_ORIGINS``,
            comma-separated; empty: no cross-origin page can read an answer).
        enable_logs: serve ``/logs`` (``QMRI_ENABLE_LOGS``); the log holds request parameters.
        enable_dataset_download: serve ``GET /datastore/dataset``, a zip of every study
            (``QMRI_ENABLE_DATASET_DOWNLOAD``).
        enable_delete: allow ``DELETE /datastore/image`` and ``/datastore/label``
            (``QMRI_ENABLE_DELETE``).
        max_upload_mb: largest request body in MiB (``QMRI_MAX_UPLOAD_MB``).
        max_voxels: largest image in voxels x channels, by its header (``QMRI_MAX_VOXELS``).
        max_image_mb: largest image in MiB of decoded data (voxels x item size), by its header
            (``QMRI_MAX_IMAGE_MB``).
        infer_workers: inferences computed at once (``QMRI_INFER_WORKERS``).
        infer_queue: inferences allowed to wait for a worker; one more is answered 429
            (``QMRI_INFER_QUEUE``).
        infer_timeout_s: seconds a client waits for its map before a 503 (``QMRI_INFER_TIMEOUT_S``).
        infer_memory_mb: memory one inference may need, in MiB, estimated from the input's header and
            the task's measured bytes per voxel; more is refused with 413 (``QMRI_INFER_MEMORY_MB``;
            default: 80 % of this machine's memory shared by the workers).
        shutdown_grace_s: seconds SIGTERM waits for running requests before the process exits
            (``QMRI_SHUTDOWN_GRACE_S``).
        label_tags: label tags a client may store (``final`` only: the training targets).
    """

    cors_origins: tuple[str, ...] = ()
    enable_logs: bool = False
    enable_dataset_download: bool = False
    enable_delete: bool = False
    max_upload_mb: int = 1024
    max_voxels: int = 128 * 1024 * 1024  # a 1 mm 256 x 256 x 200 matrix with 9 channels (OEF, raw QSM) is 118 M
    max_image_mb: int = 512
    infer_workers: int = 2
    infer_queue: int = 8
    infer_timeout_s: int = 600
    infer_memory_mb: int = 0  # 0: derived from the machine's memory and the workers (from_env)
    shutdown_grace_s: int = 5
    label_tags: tuple[str, ...] = field(default=("final",))

    @classmethod
    def from_env(cls) -> "ServerPolicy":
        d = cls()
        workers = _int("QMRI_INFER_WORKERS", d.infer_workers, 1)
        return cls(
            cors_origins=_list("QMRI_CORS_ORIGINS"),
            enable_logs=_flag("QMRI_ENABLE_LOGS", d.enable_logs),
            enable_dataset_download=_flag("QMRI_ENABLE_DATASET_DOWNLOAD", d.enable_dataset_download),
            enable_delete=_flag("QMRI_ENABLE_DELETE", d.enable_delete),
            max_upload_mb=_int("QMRI_MAX_UPLOAD_MB", d.max_upload_mb, 1),
            max_voxels=_int("QMRI_MAX_VOXELS", d.max_voxels, 1),
            max_image_mb=_int("QMRI_MAX_IMAGE_MB", d.max_image_mb, 1),
            infer_workers=workers,
            infer_queue=_int("QMRI_INFER_QUEUE", d.infer_queue, 0),
            infer_timeout_s=_int("QMRI_INFER_TIMEOUT_S", d.infer_timeout_s, 1),
            infer_memory_mb=_int("QMRI_INFER_MEMORY_MB", int(0.8 * psutil.virtual_memory().total / 2**20 / workers), 1),
            shutdown_grace_s=_int("QMRI_SHUTDOWN_GRACE_S", d.shutdown_grace_s, 0),
        )


POLICY = ServerPolicy.from_env()
