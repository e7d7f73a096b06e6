"""Typed readers for JSON sidecar values: every key a task reads goes through one of these.

A sidecar comes from a client (JSON), so any key may hold anything JSON can express: a list where
a number belongs, a string, ``true``, NaN/Infinity (Python's json accepts them), nested objects or
an integer too large for a float. Each reader returns the value in the stated units or raises
:class:`ValueError` with a message naming the key, what it must be (with units) and the value it
got (``repr``, cut to about 80 characters). Booleans are not numbers here: ``true`` is refused
where a number is expected, although Python counts ``bool`` as ``int``.
"""

from __future__ import annotations

import math
import numbers
import reprlib
from typing import Any, Mapping

import numpy as np

SHOW_CHARS = 80  # a bad value is quoted in error messages up to this many characters

#: Plausible main field strengths (tesla): (0, 20].
B0_RANGE_T = (0.0, 20.0)
#: Echo times (ms) must lie in (0, 1000) ms.
ECHO_TIME_RANGE_MS = (0.0, 1000.0)
#: PSF FWHM per axis (mm) must lie in (0, 30) mm.
FWHM_RANGE_MM = (0.0, 30.0)


_REPR = reprlib.Repr()
_REPR.maxlevel, _REPR.maxlist, _REPR.maxtuple, _REPR.maxdict = 3, 12, 12, 6
_REPR.maxstring, _REPR.maxother, _REPR.maxlong = 60, 60, 40


def show(value: Any) -> str:
    """``repr(value)`` cut to :data:`SHOW_CHARS` characters (with ``...`` when cut); long lists,
    deep nesting and huge integers are abbreviated without building their whole repr."""
    try:
        text = _REPR.repr(value)
    except ValueError:  # an integer beyond Python's int-to-str digit limit
        text = f"<a {type(value).__name__} too large to print>"
    return text if len(text) <= SHOW_CHARS else text[: SHOW_CHARS - 3] + "..."


def _require_mapping(sidecar: Any) -> Mapping[str, Any]:
    if not isinstance(sidecar, Mapping):
        raise ValueError(f"the sidecar must be a JSON object (key -> value), got {show(sidecar)}")
    return sidecar


def _is_number(v: Any) -> bool:
    """A real number that is not a boolean (numpy scalars count, numpy booleans do not)."""
    return isinstance(v, numbers.Real) and not isinstance(v, (bool, np.bool_))


def _as_float(key: str, v: Any, what: str, whole: Any) -> float:
    """``v`` as a finite float, or ValueError quoting the whole value of ``key``."""
    if not _is_number(v):
        raise ValueError(f"sidecar {key} must be {what}, got {show(whole)}")
    try:
        x = float(v)
    except OverflowError:  # an integer beyond the float range
        raise ValueError(f"sidecar {key} must be {what}, got a number too large: {show(whole)}") from None
    if not math.isfinite(x):
        raise ValueError(f"sidecar {key} must be {what}, got {show(whole)}")
    return x


def _missing(key: str, what: str) -> ValueError:
    return ValueError(f"sidecar lacks {key}: {what}")


def positive_scalar(sidecar: Mapping[str, Any], key: str, what: str, upper: float, default: float | None = None) -> float:
    """A finite number in (0, ``upper``] read from ``sidecar[key]``.

    Args:
        what: the quantity with its units for messages, e.g. ``"the main field strength in tesla"``.
        upper: largest accepted value, in the key's units.
        default: returned when the key is absent (None: the key is required). An explicit JSON
            ``null`` counts as absent.
    """
    v = _require_mapping(sidecar).get(key)
    desc = f"{what}: a number in (0, {upper:g}]"
    if v is None:
        if default is None:
            raise _missing(key, desc)
        return float(default)
    x = _as_float(key, v, desc, v)
    if not 0.0 < x <= upper:
        raise ValueError(f"sidecar {key} must be {desc}, got {show(v)}")
    return x


def field_strength_t(sidecar: Mapping[str, Any], default: float | None = 3.0) -> float:
    """Main field strength ``B0_T`` in tesla, in (0, 20] T; ``default`` when absent."""
    return positive_scalar(sidecar, "B0_T", "the main field strength in tesla", B0_RANGE_T[1], default)


def number_list(
    sidecar: Mapping[str, Any],
    key: str,
    what: str,
    lo: float,
    hi: float,
    min_len: int = 1,
    max_len: int = 64,
    increasing: bool = False,
) -> np.ndarray:
    """A list of ``min_len``..``max_len`` finite numbers, each in the open interval (``lo``, ``hi``).

    Args:
        what: the quantity with its units for messages, e.g. ``"echo times in ms"``.
        increasing: also require strictly increasing values.

    Returns a float64 array. A missing key (or ``null``) raises ValueError.
    """
    v = _require_mapping(sidecar).get(key)
    count = f"{min_len}" if min_len == max_len else f"{min_len} to {max_len}"
    order = " strictly increasing" if increasing else ""
    desc = f"a list of {count}{order} {what}, each in ({lo:g}, {hi:g})"
    if v is None:
        raise _missing(key, desc)
    if not isinstance(v, (list, tuple)):
        raise ValueError(f"sidecar {key} must be {desc}, got {show(v)}")
    if not min_len <= len(v) <= max_len:
        raise ValueError(f"sidecar {key} must be {desc}, got {len(v)} value(s): {show(v)}")
    x = np.array([_as_float(key, e, desc, v) for e in v], dtype=np.float64)
    if np.any(x <= lo) or np.any(x >= hi):
        raise ValueError(f"sidecar {key} must be {desc}, got {show(v)}")
    if increasing and np.any(np.diff(x) <= 0):
        raise ValueError(f"sidecar {key} must be {desc}; they are not strictly increasing: {show(v)}")
    return x


def echo_times_ms(sidecar: Mapping[str, Any], min_count: int = 1, max_count: int = 64) -> np.ndarray:
    """``echo_times_ms``: ``min_count``..``max_count`` positive, strictly increasing echo times in
    ms, each in (0, 1000) ms (float64 array, ms)."""
    return number_list(sidecar, "echo_times_ms", "echo times in ms", *ECHO_TIME_RANGE_MS, min_len=min_count, max_len=max_count, increasing=True)


def fwhm_mm(sidecar: Mapping[str, Any], key: str = "psf_fwhm_mm") -> tuple[float, float, float]:
    """A point-spread function FWHM in mm: one number (isotropic) or three (per array axis), each
    in (0, 30) mm. Returns the three values."""
    v = _require_mapping(sidecar).get(key)
    lo, hi = FWHM_RANGE_MM
    desc = f"the PSF FWHM in mm: one number or a list of 3 (one per axis), each in ({lo:g}, {hi:g}) mm"
    if v is None:
        raise _missing(key, desc)
    if isinstance(v, (list, tuple)):
        if len(v) not in (1, 3):
            raise ValueError(f"sidecar {key} must be {desc}, got {len(v)} values: {show(v)}")
        vals = [_as_float(key, e, desc, v) for e in v]
        vals = vals * 3 if len(vals) == 1 else vals
    else:
        vals = [_as_float(key, v, desc, v)] * 3
    if not all(lo < f < hi for f in vals):
        raise ValueError(f"sidecar {key} must be {desc}, got {show(v)}")
    return tuple(vals)


def direction(sidecar: Mapping[str, Any], key: str = "B0_dir", what: str = "the B0 direction in the image's array axes") -> tuple[float, float, float]:
    """A 3-vector of finite numbers, not zero, returned normalised to unit length (dimensionless)."""
    v = _require_mapping(sidecar).get(key)
    desc = f"{what}: a list of 3 numbers, not all zero"
    if v is None:
        raise _missing(key, desc)
    if not isinstance(v, (list, tuple)) or len(v) != 3:
        raise ValueError(f"sidecar {key} must be {desc}, got {show(v)}")
    x = np.array([_as_float(key, e, desc, v) for e in v], dtype=np.float64)
    scale = np.abs(x).max()
    if scale == 0 or not np.isfinite(scale):
        raise ValueError(f"sidecar {key} must be {desc}; {show(v)} is not a direction")
    x = x / scale  # avoids overflow in the norm for values near the float limit
    x = x / np.linalg.norm(x)
    return tuple(float(e) for e in x)


def units_label(sidecar: Mapping[str, Any], default: str, key: str = "units", channel: int = 0, max_chars: int = 32) -> str:
    """A units string: ``sidecar[key]`` if a string (it then applies to every channel), or entry
    ``channel`` of a list of strings; ``default`` when absent. At most ``max_chars`` printable
    characters (it is echoed to clients)."""
    v = _require_mapping(sidecar).get(key)
    desc = f"the units (a string of at most {max_chars} characters, or a list of one per channel)"
    if v is None:
        return default
    u = v
    if isinstance(v, (list, tuple)):
        if len(v) <= channel:
            raise ValueError(f"sidecar {key} must be {desc}; it has no entry for channel {channel}: {show(v)}")
        u = v[channel]
    if not isinstance(u, str) or not u.strip() or len(u) > max_chars or not u.isprintable():
        raise ValueError(f"sidecar {key} must be {desc}, got {show(v)}")
    return u


def expect_units(sidecar: Mapping[str, Any], allowed: tuple[str, ...], what: str, channel: int = 0, key: str = "units") -> None:
    """Refuse a sidecar whose units for ``channel`` (see :func:`units_label`; a string applies to
    every channel) are not one of ``allowed`` (case-insensitive). Absent units pass: the caller
    then checks the values themselves."""
    u = units_label(sidecar, "", key=key, channel=channel)
    if u and u.strip().lower() not in {a.lower() for a in allowed}:
        raise ValueError(f"{what} must be in {' or '.join(allowed)}; the sidecar's {key} say {show(u)}")


#: The last echo of a multi-echo GRE must lie in this range (ms): echo times given in seconds
#: (last echo < 1) or in microseconds (> 200) are refused rather than fitted.
GRE_LAST_ECHO_MS = (1.0, 200.0)


def echo_times_s(sidecar: dict[str, Any], min_count: int = 3) -> np.ndarray:
    """The sidecar's ``echo_times_ms`` (at least ``min_count``, positive, strictly increasing, last
    echo within :data:`GRE_LAST_ECHO_MS`) converted to seconds."""
    te = echo_times_ms(sidecar, min_count=min_count)
    lo, hi = GRE_LAST_ECHO_MS
    if not lo <= te[-1] <= hi:
        raise ValueError(f"echo_times_ms {te.tolist()} are not plausible GRE echo times in ms (the last echo must be {lo:g}..{hi:g} ms)")
    return te / 1000.0
