"""QQ (QSM + qBOLD) forward model for oxygen extraction fraction (OEF) mapping.

Implements shared/REFERENCE.md section 1, the forward model of the QQ-NET release
(Cho et al., MRM 2018 "Cluster analysis of time evolution (CAT) for QSM+qBOLD OEF mapping";
Cho et al., MRM 2022 "QQ-NET") as used by the seed papers 000 (3D CNN) and 001 (LSTM):

* mGRE magnitude  ``S(t) = S0 * exp(-R2 t) * exp(-v * f_s(dw * t))``  (no macroscopic G(t) term)
* frequency shift ``dw = |(1/3) gamma B0 (Hct dchi0 (1 - Y) + chi_ba - chi_nb)|``  [rad/s]
* susceptibility  ``chi = [chi_ba/alpha + psi_Hb dchi_Hb (-Y + (1 - (1-alpha) Ya)/alpha)] v
  + (1 - v/alpha) chi_nb``  [ppm]
* ``OEF = 1 - Y/Ya``

``f_s`` is the exact Yablonskiy-Haacke static-dephasing function (Yablonskiy & Haacke, MRM 1994)
``f_s(x) = 1F2(-1/2; 3/4, 5/4; -9x^2/16) - 1``; see :func:`fs` for how it is evaluated.

Every function accepts numpy arrays (returns numpy) or torch tensors (returns torch, same device,
differentiable). Units: times in s, rates in 1/s, susceptibilities in ppm, frequencies in rad/s,
Y, v and OEF as fractions.
"""

from __future__ import annotations

import math
import os
import threading
from typing import Sequence

import numpy as np
import torch

# --------------------------------------------------------------------------------------------
# Constants (REFERENCE section 1; QQ-NET release)
# --------------------------------------------------------------------------------------------
HCT = 0.3567  # haematocrit, fraction
DCHI0 = 4.0 * math.pi * 0.27  # ppm (SI), susceptibility difference fully deoxygenated vs oxygenated RBC = 3.393
PSI_HB = HCT * 0.34 / 1.335  # volume fraction of haemoglobin in blood = 0.0908
DCHI_HB = 12.522  # ppm, susceptibility of deoxy- minus oxy-haemoglobin (per Hb volume fraction)
CHI_BA = -0.1081  # ppm, susceptibility of fully oxygenated blood
ALPHA = 0.77  # ratio of venous to total cerebral blood volume
YA = 0.98  # arterial oxygen saturation, fraction
GAMMA = 267.513  # rad/s/T per ppm: proton gyromagnetic ratio 267.513e6 rad/s/T times 1e-6 (ppm)
B0_DEFAULT = 3.0  # T

# Parameter order used by the networks and the classical fit (QQ-NET order).
PARAM_NAMES: tuple[str, ...] = ("S0", "R2", "Y", "v", "chi_nb")
PARAM_UNITS: dict[str, str] = {
    "S0": "a.u. (relative to echo 1 when echoes are divided by echo 1)",
    "R2": "1/s",
    "Y": "fraction",
    "v": "fraction",
    "chi_nb": "ppm",
}
# Physical bounds (QQ-NET); S0 bound applies to echoes normalised by the echo-1 magnitude.
PARAM_BOUNDS: dict[str, tuple[float, float]] = {
    "S0": (0.8, 2.5),
    "R2": (2.0, 190.0),
    "Y": (0.0, 0.98),
    "v": (0.0, 0.08),
    "chi_nb": (-1.0, 1.6),
}
PARAM_LOWER = np.array([PARAM_BOUNDS[n][0] for n in PARAM_NAMES])
PARAM_UPPER = np.array([PARAM_BOUNDS[n][1] for n in PARAM_NAMES])
# QQ-NET output normalisation (order S0, R2, Y, v, chi_nb): (p - mean) / std.
QQNET_MEAN = np.array([1.0983, 20.1093, 0.6833, 0.0183, -0.0100])
QQNET_STD = np.array([0.0396, 7.2432, 0.1003, 0.00545, 0.0371])
# QQ-NET patient protocol: 3 T mGRE, 8 echoes, TE1/dTE/TE8 = 4.5/5/39.5 ms.
QQNET_TE_S = tuple(0.0045 + 0.005 * i for i in range(8))

# --------------------------------------------------------------------------------------------
# f_s: exact static-dephasing function
# --------------------------------------------------------------------------------------------
# scipy has no 1F2 and QQ-NET's 58-degree polynomial diverges for x > 17, so f_s is evaluated
# from its two classical expansions, both derived here and checked against mpmath.hyp1f2 at 40
# digits (max relative error < 2e-12 for x <= 14 and < 2e-10 for x >= 14):
#
# * x <= _X_SWITCH: the power series of 1F2(a; b1, b2; z), a=-1/2, b1=3/4, b2=5/4, z=-9x^2/16:
#       f_s(x) = sum_{k>=1} c_k x^(2k),  c_k = (a)_k / ((b1)_k (b2)_k k!) (-9/16)^k,  c_1 = 3/10.
#   Its terms alternate and peak near exp(1.5 x), so float64 loses ~exp(1.5x)*1e-16 absolute:
#   < 1e-11 relative at x = 14.  45 terms reach full convergence there; Horner
#   in x^2 keeps full relative accuracy as x -> 0.
# * x > _X_SWITCH: the large-argument asymptotic expansion = algebraic part + oscillatory part.
#   - algebraic part (Mellin-Barnes residues at the poles of Gamma(a+s), DLMF 16.11):
#       1F2 ~ Gamma(b1)Gamma(b2)/Gamma(a) sum_n (-1)^n/n! Gamma(a+n) / (Gamma(b1-a-n)Gamma(b2-a-n))
#             * X^(1/2-n),   X = 9x^2/16,
#     i.e. f_s ~ x - 1 + 1/(6x) - ... ;
#   - oscillatory part: the endpoint u=1 of the integral form
#       f_s(x) = (1/3) Int_0^1 (2+u) sqrt(1-u) (1 - J0(k u)) / u^2 du,  k = 1.5 x,
#     where (2+u)sqrt(1-u)/u^2 = sum_n (2n+3) w^(n+1/2), w = 1-u, combined with the Hankel
#     expansion of J0(k(1-w)) and Watson's lemma:
#       f_osc = -(1/3) Re[ sqrt(2/pi) e^{i(k - pi/4)} sum_j d_j k^(-2-j) ],
#       d_j = sum_{m+n+l=j} i^m a_m(0) (2n+3) (m+1/2)_l / l! Gamma(n+l+3/2) i^-(n+l+3/2),
#     with a_m(0) the Hankel coefficients of order 0.  The oscillation is ~0.6 cos(1.5x+phi)/x^2.
#   14 oscillatory and 7 algebraic terms give < 2e-10 relative error for x >= 14.
# The derivative is the term-wise derivative of the same expansions (valid for both).
_X_SWITCH = 14.0
_N_SERIES = 45
_N_ALG = 7
_N_OSC = 14


def _series_coefficients(n_terms: int) -> np.ndarray:
    a, b1, b2 = -0.5, 0.75, 1.25
    c = np.zeros(n_terms + 1)
    t = 1.0
    for k in range(1, n_terms + 1):
        t *= (a + k - 1) / ((b1 + k - 1) * (b2 + k - 1) * k) * (-9.0 / 16.0)
        c[k] = t
    return c


def _algebraic_coefficients(n_terms: int) -> np.ndarray:
    """Coefficients h_n with 1F2 ~ sum_n h_n y^(1-2n), y = sqrt(X) = 0.75 x."""
    a, b1, b2 = -0.5, 0.75, 1.25
    pre = math.gamma(b1) * math.gamma(b2) / math.gamma(a)
    h = np.zeros(n_terms)
    for n in range(n_terms):
        h[n] = pre * (-1) ** n / math.factorial(n) * math.gamma(a + n) / (math.gamma(b1 - a - n) * math.gamma(b2 - a - n))
    return h


def _oscillatory_coefficients(n_terms: int) -> np.ndarray:
    """Complex D_j = sqrt(2/pi) e^{-i pi/4} d_j (see the comment above), as a complex array."""

    def hankel_a(m: int) -> float:
        p = 1.0
        for j in range(1, m + 1):
            p *= -((2 * j - 1) ** 2)
        return p / (math.factorial(m) * 8.0**m)

    def rising(x: float, n: int) -> float:
        p = 1.0
        for i in range(n):
            p *= x + i
        return p

    d = np.zeros(n_terms, dtype=complex)
    for m in range(n_terms):
        for n in range(n_terms - m):
            for l in range(n_terms - m - n):
                d[m + n + l] += (1j) ** m * hankel_a(m) * (2 * n + 3) * rising(m + 0.5, l) / math.factorial(l) * math.gamma(n + l + 1.5) * (1j) ** (-(n + l + 1.5))
    return math.sqrt(2.0 / math.pi) * np.exp(-1j * math.pi / 4.0) * d


_C_SERIES = _series_coefficients(_N_SERIES)  # c_0 = 0 (the "-1" of f_s cancels the 1F2 constant)
_H_ALG = _algebraic_coefficients(_N_ALG)
_D_OSC = _oscillatory_coefficients(_N_OSC)


def _series_value(xs, deriv: bool):
    """Power series of f_s (or df_s/dx) at 0 <= xs <= _X_SWITCH (float64; in-place Horner on
    fresh buffers, which is ~8x faster on CPU than a gathered piecewise-polynomial table)."""
    x2 = xs * xs
    s = x2 * 0.0
    if deriv:  # df_s/dx = x * sum_k 2k c_k x^(2k-2)
        for k in range(_N_SERIES, 1, -1):
            s += 2.0 * k * float(_C_SERIES[k])
            s *= x2
        s += 2.0 * float(_C_SERIES[1])
        return s * xs
    for k in range(_N_SERIES, 0, -1):
        s += float(_C_SERIES[k])
        s *= x2
    return s


def _asymptotic_value(x, cos, sin, deriv: bool):
    """Large-x expansion (x >= _X_SWITCH) of f_s, or of df_s/dx when deriv."""
    y = 0.75 * x
    iy2 = 1.0 / (y * y)
    k = 1.5 * x
    ik = 1.0 / k
    alg = x * 0.0
    qr = x * 0.0
    qi = x * 0.0
    for n in range(_N_ALG - 1, -1, -1):
        alg = alg * iy2 + float((1 - 2 * n) * _H_ALG[n] if deriv else _H_ALG[n])
    for j in range(_N_OSC - 1, -1, -1):
        qr = qr * ik + float(_D_OSC[j].real)
        qi = qi * ik + float(_D_OSC[j].imag)
    ik2 = ik * ik
    qr, qi = qr * ik2, qi * ik2  # Q(k) = sum_j D_j k^(-2-j)
    c, sn = cos(k), sin(k)
    if not deriv:
        return alg * y - 1.0 - (c * qr - sn * qi) / 3.0
    pr = x * 0.0
    pi_ = x * 0.0
    for j in range(_N_OSC - 1, -1, -1):
        pr = pr * ik - (2 + j) * float(_D_OSC[j].real)
        pi_ = pi_ * ik - (2 + j) * float(_D_OSC[j].imag)
    pr, pi_ = pr * ik2 * ik, pi_ * ik2 * ik  # Q'(k) = -sum_j (2+j) D_j k^(-3-j)
    # d/dk Re[e^{ik} Q] = Re[e^{ik} (iQ + Q')] = -(sin k Qr + cos k Qi) + (cos k Pr - sin k Pi)
    return 0.75 * alg - 0.5 * (-(sn * qr + c * qi) + (c * pr - sn * pi_))


#: Values per pass of the series on the CPU: its 45-term Horner loop is memory-bound, and chunks
#: that stay in cache are several times faster than one pass over a whole volume (the values are
#: the same: every operation is elementwise).
_CPU_CHUNK = 131072


def _fs_dispatch(ax, deriv: bool):
    """f_s (or df_s/dx) at ax >= 0, float64 numpy array or tensor; series or asymptote per element
    (the asymptotic branch is evaluated only where needed), in cache-sized chunks on the CPU.

    A CPU tensor outside autograd is chunked in numpy: each of the ~90 elementwise torch ops per
    chunk is an OpenMP parallel region, and with ``OMP_WAIT_POLICY=PASSIVE`` (the server's setting,
    Makefile) every region wakes sleeping threads; measured on the sample OEF study, the default
    network's map took 19.2 s under PASSIVE against 10.4 s (first call) with torch chunks. The numpy
    chunks run on :func:`_fs_threads` threads from 2 x :data:`_THREAD_MIN` values up."""
    is_t = isinstance(ax, torch.Tensor)
    n = ax.numel() if is_t else np.size(ax)
    cpu = not is_t or ax.device.type == "cpu"
    in_autograd = is_t and ax.requires_grad
    if cpu and not in_autograd and (n > _CPU_CHUNK or (n >= 2 * _THREAD_MIN and _fs_threads() > 1)):
        if is_t:  # the same values from numpy's ufuncs
            return torch.from_numpy(_fs_dispatch(ax.detach().numpy(), deriv)).to(ax.dtype)
        return _fs_numpy_threads(np.ascontiguousarray(ax, np.float64).reshape(-1), deriv).reshape(np.shape(ax))
    if cpu and n > _CPU_CHUNK:  # a tensor inside autograd: torch chunks
        flat = ax.reshape(-1)
        return torch.cat([_fs_block(flat[i : i + _CPU_CHUNK], deriv) for i in range(0, n, _CPU_CHUNK)]).reshape(ax.shape)
    return _fs_block(ax, deriv)


_THREAD_MIN = 16384  # values per thread below which one thread is faster than handing work over
_THREADS: list = []  # [(pid, pool)] of :func:`_fs_numpy_threads`, made on first use in each process
_THREADS_LOCK = threading.Lock()


def _fs_threads() -> int:
    """Threads for f_s's numpy chunks: torch's intra-op count (which the server and the trainers set
    deliberately) where OpenMP threads sleep between parallel regions (``OMP_WAIT_POLICY=PASSIVE``,
    the Makefile's setting), else 1: spinning OpenMP threads would compete with these for the cores."""
    if os.environ.get("OMP_WAIT_POLICY", "").strip().upper() != "PASSIVE":
        return 1
    return max(1, torch.get_num_threads())


def _fs_numpy_threads(flat: np.ndarray, deriv: bool) -> np.ndarray:
    """f_s (or df_s/dx) of a flat float64 array in :data:`_CPU_CHUNK` chunks, spread over
    :func:`_fs_threads` threads: numpy's ufuncs release the GIL, so the chunks run in parallel, and
    every value is the same as from one thread (elementwise)."""
    n = flat.size
    out = np.empty(n, np.float64)
    k = max(1, min(_fs_threads(), n // _THREAD_MIN))
    size = min(_CPU_CHUNK, -(-n // k))  # a call of a region's 128 000 values still uses every thread
    starts = range(0, n, size)

    def work(j: int) -> None:
        for i in starts[j::k]:
            out[i : i + size] = _fs_block(flat[i : i + size], deriv)

    if k == 1:
        work(0)
        return out
    with _THREADS_LOCK:  # two server requests may make the first call at once
        if not _THREADS or _THREADS[0][0] != os.getpid():  # a forked child (a data loader worker) makes its own
            from concurrent.futures import ThreadPoolExecutor

            _THREADS[:] = [(os.getpid(), ThreadPoolExecutor(max_workers=max(1, (os.cpu_count() or 2) - 1), thread_name_prefix="qmri-fs"))]
        pool = _THREADS[0][1]
    futures = [pool.submit(work, j) for j in range(1, k)]
    work(0)
    for f in futures:
        f.result()
    return out


def _fs_block(ax, deriv: bool):
    is_t = isinstance(ax, torch.Tensor)
    xs = torch.clamp(ax, max=_X_SWITCH) if is_t else np.minimum(ax, _X_SWITCH)
    out = _series_value(xs, deriv)
    big = ax > _X_SWITCH
    if bool(big.any()):
        xb = ax[big]
        if is_t:
            out[big] = _asymptotic_value(xb, torch.cos, torch.sin, deriv)
        else:
            out = np.array(out, dtype=np.float64, ndmin=1).reshape(ax.shape) if np.ndim(out) == 0 else out
            out[big] = _asymptotic_value(xb, np.cos, np.sin, deriv)
    return out


def _work_dtype(t: torch.Tensor) -> torch.dtype:
    # float64 everywhere except Apple MPS, which has no float64 (there the series loses accuracy
    # for x > ~5; the project targets CPU and CUDA).
    return torch.float32 if t.device.type == "mps" else torch.float64


def _fs_prime_torch(x: torch.Tensor) -> torch.Tensor:
    xw = x.to(_work_dtype(x))
    return (torch.sign(xw) * _fs_dispatch(torch.abs(xw), True)).to(x.dtype)


class _FsFunction(torch.autograd.Function):
    """f_s with an analytic backward (keeps memory flat: no graph through the 45-term series)."""

    @staticmethod
    def forward(ctx, x):
        ctx.save_for_backward(x)
        xw = x.to(_work_dtype(x))
        return _fs_dispatch(torch.abs(xw), False).to(x.dtype)

    @staticmethod
    def backward(ctx, grad):
        (x,) = ctx.saved_tensors
        return grad * _fs_prime_torch(x)


def fs(x):
    """Yablonskiy-Haacke static-dephasing function f_s(x), x = dw * t (dimensionless, rad).

    ``f_s(x) = 1F2(-1/2; 3/4, 5/4; -9x^2/16) - 1
             = (1/3) Int_0^1 (2+u) sqrt(1-u) (1 - J0(1.5 x u)) / u^2 du``
    (Yablonskiy & Haacke, MRM 32:749, 1994). Limits: 0.3 x^2 for x << 1, x - 1 + 1/(6x) for x >> 1.
    Even in x. Exact to < 1e-9 relative for all x (computed in float64; see module comments).

    numpy input -> numpy (float64, or float32 for float32 input); torch input -> torch tensor of the
    same dtype/device, differentiable (analytic derivative, double-backward supported).
    """
    if isinstance(x, torch.Tensor):
        return _FsFunction.apply(x)
    xa = np.asarray(x)
    out = _fs_dispatch(np.abs(xa.astype(np.float64)), False)
    return out.astype(np.float32) if xa.dtype == np.float32 else out


def fs_prime(x):
    """Derivative df_s/dx of :func:`fs` (numpy or torch, same conventions)."""
    if isinstance(x, torch.Tensor):
        return _fs_prime_torch(x)
    xa = np.asarray(x)
    xw = xa.astype(np.float64)
    out = np.sign(xw) * _fs_dispatch(np.abs(xw), True)
    return out.astype(np.float32) if xa.dtype == np.float32 else out


# --------------------------------------------------------------------------------------------
# QQ model
# --------------------------------------------------------------------------------------------
def delta_omega(Y, chi_nb, B0: float = B0_DEFAULT):
    """Characteristic frequency shift dw [rad/s] of the venous compartment.

    ``dw = |(1/3) gamma B0 (Hct dchi0 (1 - Y) + chi_ba - chi_nb)|`` with Y a fraction, chi_nb in
    ppm, B0 in T (REFERENCE section 1; note (1 - Y), as in QQ-NET, not (Ya - Y)).
    Y = 0.6, chi_nb = 0, B0 = 3 T gives 100.6 rad/s.
    """
    inner = HCT * DCHI0 * (1.0 - Y) + CHI_BA - chi_nb
    val = (GAMMA * B0 / 3.0) * inner
    return torch.abs(val) if isinstance(val, torch.Tensor) else np.abs(val)


def _te_like(te_s, ref):
    if isinstance(ref, torch.Tensor):
        return torch.as_tensor(np.asarray(te_s, dtype=np.float64), dtype=ref.dtype, device=ref.device)
    return np.asarray(te_s, dtype=np.float64)


def qbold_magnitude(S0, R2, Y, v, chi_nb, te_s: Sequence[float], B0: float = B0_DEFAULT):
    """qBOLD mGRE magnitude ``S0 exp(-R2 t) exp(-v f_s(dw t))`` at the echo times ``te_s`` [s].

    S0 in any unit (the output carries it), R2 in 1/s, Y and v fractions, chi_nb in ppm; maps of
    any (identical or broadcastable) shape. Returns the echoes stacked on a new last axis.
    """
    ref = next((p for p in (S0, R2, Y, v, chi_nb) if isinstance(p, torch.Tensor)), None)
    if ref is not None:
        S0, R2, Y, v, chi_nb = (torch.as_tensor(p, dtype=ref.dtype, device=ref.device) for p in (S0, R2, Y, v, chi_nb))
        exp = torch.exp
    else:
        S0, R2, Y, v, chi_nb = (np.asarray(p, dtype=np.float64) for p in (S0, R2, Y, v, chi_nb))
        exp = np.exp
    t = _te_like(te_s, ref if ref is not None else S0)
    dw = delta_omega(Y, chi_nb, B0)
    x = dw[..., None] * t
    return S0[..., None] * exp(-R2[..., None] * t - v[..., None] * fs(x))


#: The Y-independent part of the blood term of the QSM equation: (1 - (1 - alpha) Ya) / alpha.
K_BLOOD = (1.0 - (1.0 - ALPHA) * YA) / ALPHA


def blood_chi(Y):
    """Susceptibility of the blood compartment per unit v [ppm]: the QSM equation's factor of v
    without chi_nb, ``chi_ba/alpha + psi_Hb dchi_Hb (-Y + (1 - (1-alpha) Ya)/alpha)``."""
    return CHI_BA / ALPHA + PSI_HB * DCHI_HB * (-Y + K_BLOOD)


def qq_susceptibility(Y, v, chi_nb):
    """Voxel susceptibility [ppm] predicted by the QQ model (QSM part).

    ``chi = blood_chi(Y) v + (1 - v/alpha) chi_nb`` (:func:`blood_chi`).
    Y = 0.6, v = 0.03, chi_nb = 0 gives +0.0096 ppm.
    """
    return blood_chi(Y) * v + (1.0 - v / ALPHA) * chi_nb


def qq_model(S0, R2, Y, v, chi_nb, te_s, B0: float = B0_DEFAULT, jac: bool = True):
    """The QQ model of N voxels and its analytic Jacobian (numpy float64 or torch, following ``S0``).

    Args: 1-D parameter arrays (S0 a.u., R2 1/s, Y and v fractions, chi_nb ppm); ``te_s`` echo
    times [s] (array of the same kind).
    Returns ``(S, chi, J_S, j_chi)``: echo magnitudes (N, E) [units of S0], voxel susceptibility
    (N,) [ppm], and with ``jac`` their derivatives with respect to (S0, R2, Y, v, chi_nb): (N, E, 5)
    and (N, 5) (else None, None). At the kink of ``|Hct dchi0 (1-Y) + chi_ba - chi_nb| = 0`` the
    one-sided derivative of the positive branch is used.
    """
    xp = torch if isinstance(S0, torch.Tensor) else np
    t = te_s
    c = GAMMA * B0 / 3.0
    inner = HCT * DCHI0 * (1.0 - Y) + CHI_BA - chi_nb
    x = (c * abs(inner))[:, None] * t
    F = fs(x)
    E = xp.exp(-R2[:, None] * t - v[:, None] * F)
    S = S0[:, None] * E
    bchi = blood_chi(Y)
    chi = bchi * v + (1.0 - v / ALPHA) * chi_nb
    if not jac:
        return S, chi, None, None
    Fp = fs_prime(x)
    sgn = xp.where(inner >= 0, 1.0, -1.0)
    dx_dY = (c * sgn * (-HCT * DCHI0))[:, None] * t
    dx_dc = (c * sgn * (-1.0))[:, None] * t
    vFpS = v[:, None] * Fp * S
    zero = xp.zeros_like(S0)
    J_S = xp.stack([E, -t * S, -vFpS * dx_dY, -F * S, -vFpS * dx_dc], 2)
    j_chi = xp.stack([zero, zero, -PSI_HB * DCHI_HB * v, bchi - chi_nb / ALPHA, 1.0 - v / ALPHA], 1)
    return S, chi, J_S, j_chi


def oef_from_y(Y):
    """OEF = 1 - Y/Ya as a fraction (multiply by 100 for %)."""
    return 1.0 - Y / YA


def y_from_oef(oef):
    """Inverse of :func:`oef_from_y`: Y = Ya (1 - OEF), OEF a fraction."""
    return YA * (1.0 - oef)


# --------------------------------------------------------------------------------------------
# Noise
# --------------------------------------------------------------------------------------------
def noise_sigma(signal, snr: float, mask=None) -> float:
    """Noise standard deviation for a given SNR.

    SNR is defined as (mean echo-1 magnitude over the brain) / sigma, where sigma is the standard
    deviation of each real/imaginary Gaussian noise channel. ``signal`` has echoes last; ``mask``
    (boolean, shape ``signal.shape[:-1]``) selects the brain, default all voxels with echo 1 > 0.
    """
    sig = signal.detach().cpu().numpy() if isinstance(signal, torch.Tensor) else np.asarray(signal)
    e1 = sig[..., 0]
    m = (e1 > 0) if mask is None else np.asarray(mask, dtype=bool)
    return float(e1[m].mean()) / float(snr)


def add_noise(signal, snr: float, rng: np.random.Generator, kind: str = "rician", mask=None, sigma=None):
    """Add MR noise at a stated SNR to a magnitude signal (echoes last).

    SNR = mean echo-1 magnitude in the brain (``mask``, default echo 1 > 0) / sigma; pass ``sigma``
    to fix the noise level directly. ``kind="rician"``: complex Gaussian noise of std sigma per
    channel added to the (real, phase-zero) signal, then the magnitude is taken, i.e.
    |S + n_re + i n_im|. ``kind="gaussian"``: the real channel only, S + n_re (complex Gaussian
    noise projected on the signal phase; can go negative). numpy in -> numpy out; torch in -> torch
    out (noise drawn with the numpy ``rng`` for reproducibility).
    """
    is_t = isinstance(signal, torch.Tensor)
    sig = signal.detach().cpu().numpy() if is_t else np.asarray(signal, dtype=np.float64)
    s = noise_sigma(sig, snr, mask) if sigma is None else float(sigma)
    n_re = rng.normal(0.0, s, size=sig.shape)
    if kind == "rician":
        n_im = rng.normal(0.0, s, size=sig.shape)
        out = np.sqrt((sig + n_re) ** 2 + n_im**2)
    elif kind == "gaussian":
        out = sig + n_re
    else:
        raise ValueError(f"unknown noise kind {kind!r}; use 'rician' or 'gaussian'")
    out = out.astype(sig.dtype, copy=False)
    if is_t:
        return torch.as_tensor(out, dtype=signal.dtype, device=signal.device)
    return out
