"""Where and with how many threads the networks and torch-based solvers run: one setting per process.

The server chooses both once at start (``--conf device auto|cpu|cuda:N``, ``--conf torch_threads N``;
:mod:`apps.qmri.main`), ``qmri infer`` with ``--device``; every task then loads its weights onto
:func:`device` and runs its networks and iterative solvers there. ``auto`` is CUDA when torch sees a
GPU, else the CPU.

Threads: torch's intra-op pool and the BLAS pools (numpy/scipy, through threadpoolctl) default to one
thread per core in every process, so a request beside a training process, or parallel processes,
each spin a full pool on the same cores and slow each other far more than their share
(experiments/threads/results.md). :func:`set_threads` sets both pools of this process
(``--conf torch_threads``); a training the server starts takes half the cores.
"""

from __future__ import annotations

import logging
import os
import threading

import torch

log = logging.getLogger(__name__)

_STATE = {"device": None, "spec": "auto"}
_LOCK = threading.Lock()


def resolve(spec: str | None) -> torch.device:
    """``auto`` (or None): CUDA device 0 when available, else CPU; ``cpu``; ``cuda`` / ``cuda:N``.
    ValueError naming the choices for anything else, or for a CUDA device this machine lacks."""
    s = "auto" if spec is None else str(spec).strip().lower()
    if s == "auto":
        return torch.device("cuda:0" if torch.cuda.is_available() else "cpu")
    if s == "cpu":
        return torch.device("cpu")
    if s == "cuda" or (s.startswith("cuda:") and s[5:].isdigit()):
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        idx = int(s[5:]) if ":" in s else 0
        if idx >= n:
            raise ValueError(f"device {spec!r} is not available here ({n} CUDA device(s) visible); use auto or cpu")
        return torch.device(f"cuda:{idx}")
    raise ValueError(f"unknown device {spec!r}; choose auto, cpu, cuda or cuda:N")


def use(spec: str | None) -> torch.device:
    """Set this process's compute device (see :func:`resolve`) and return it."""
    d = resolve(spec)
    with _LOCK:
        _STATE["device"], _STATE["spec"] = d, "auto" if spec is None else str(spec)
    log.info("compute device: %s (asked: %s)", d, _STATE["spec"])
    return d


def device() -> torch.device:
    """This process's compute device (``auto`` until :func:`use` is called)."""
    with _LOCK:
        if _STATE["device"] is None:
            _STATE["device"] = resolve(_STATE["spec"])
        return _STATE["device"]


def set_threads(n: int | None) -> int:
    """Use ``n`` threads for torch's intra-op pool and the BLAS/OpenMP pools of this process (None:
    leave the defaults); returns the torch thread count in effect."""
    if n is not None:
        n = max(1, int(n))
        torch.set_num_threads(n)
        try:
            from threadpoolctl import threadpool_limits

            threadpool_limits(n)
        except ImportError:  # threadpoolctl ships with scikit-learn; without it only torch is limited
            pass
    return torch.get_num_threads()


def cores() -> int:
    """CPU cores this process may use (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def describe() -> dict:
    """For ``/info`` and result JSONs: the device, its name, and the thread count."""
    d = device()
    name = torch.cuda.get_device_name(d) if d.type == "cuda" else "CPU"
    return {"device": str(d), "name": name, "asked": _STATE["spec"], "torch_threads": torch.get_num_threads(), "cores": cores()}
