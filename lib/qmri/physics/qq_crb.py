"""Cramer-Rao bounds (CRB) of OEF for the QQ (QSM + qBOLD) model, per voxel and per region.

Model and units as :mod:`qmri.physics.qq`: 5 parameters per voxel in the order
``(S0 [a.u.], R2 [1/s], Y [fraction], v [fraction], chi_nb [ppm])`` map to E mGRE echo magnitudes
(same units as S0) at the echo times ``te_s`` [s] plus one QSM value chi [ppm]. OEF = 1 - Y/Ya, so
``sd(OEF) [%-points] = 100 / Ya * sd(Y)``.

Noise model (that of :mod:`qmri.simulate.oef`): every echo magnitude carries noise of sd
``sigma_signal`` (the simulator adds Rician noise with sigma = brain-mean echo-1 magnitude / SNR;
the Fisher information here is that of Gaussian noise of the same sigma, the high-SNR limit of
Rician noise), the QSM value Gaussian noise of sd ``qsm_sd_ppm`` (default 0.005 ppm =
``QSM_NOISE_PPM`` of the simulator); all independent. The Fisher information of one voxel is
``I = J_S^T J_S / sigma_signal^2 + j_chi j_chi^T / qsm_sd_ppm^2`` with the analytic Jacobian
(:func:`qq_jacobian`). Its entries carry the units 1/(unit_i unit_j) of the parameter pair.

Region bound: a region of N voxels whose Y (and optionally v) is one shared unknown while the other
parameters are free per voxel has the Fisher information of the shared parameters
``I_region = sum_i (I_ss^i - I_sn^i (I_nn^i)^+ I_ns^i)`` (per-voxel Schur complements; the
nuisance parameters of different voxels do not interact). The CRB of a region OEF is the Y entry
of ``I_region^-1``. This is the bound of an unbiased estimator of the region's common OEF; it is
what averaging the data (not the voxel estimates) of a homogeneous region can at best achieve.

Singular per-voxel nuisance blocks (e.g. v = 0, where Y is not seen, or the quadratic regime where
S0, R2 and v are nearly collinear) are handled with a generalised inverse: the block is scaled to
unit diagonal (Jacobi scaling; a zero diagonal keeps scale 1), pseudo-inverted with relative cut-off
:data:`RCOND`, and scaled back. Because a Fisher matrix is positive semi-definite, the columns of
I_ns lie in the range of I_nn, so any generalised inverse gives the exact (generalised) Schur
complement; directions the data do not inform contribute nothing. A shared-parameter information
whose (Jacobi-scaled) smallest eigenvalue is below RCOND times its largest gives an infinite bound.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from qmri.physics.qq import (
    qq_model,
    B0_DEFAULT,
    PARAM_BOUNDS,
    PARAM_NAMES,
    QQNET_TE_S,
    YA,
    qbold_magnitude,
    y_from_oef,
)

QSM_SD_PPM = 0.005  # = qmri.simulate.oef.QSM_NOISE_PPM (not imported: keeps this module light)
RCOND = 1e-12
_IDX = {n: i for i, n in enumerate(PARAM_NAMES)}
# representative tissues: phantom priors (qmri.physics.qq_phantom.TISSUE_PRIORS), (mean, sd)
TISSUES: dict[str, dict[str, tuple[float, float]]] = {
    "GM": {"S0": (0.85, 0.05), "R2": (12.0, 6.0), "v": (0.04, 0.02), "chi_nb": (0.1, 0.15)},
    "WM": {"S0": (0.75, 0.05), "R2": (17.0, 4.0), "v": (0.02, 0.02), "chi_nb": (-0.1, 0.15)},
}
# alternative mGRE protocols for protocol_needed: name -> echo times [s]
PROTOCOLS: dict[str, tuple[float, ...]] = {
    "QQ-NET 8 echoes 4.5-39.5 ms": tuple(QQNET_TE_S),
    "16 echoes 3-48 ms": tuple(np.linspace(0.003, 0.048, 16)),
    "12 echoes 2-57 ms": tuple(np.linspace(0.002, 0.057, 12)),
}


def _params(params) -> np.ndarray:
    p = np.asarray(params, dtype=np.float64)
    if p.ndim == 1:
        p = p[None]
    if p.ndim != 2 or p.shape[1] != 5:
        raise ValueError(f"params must be (N, 5) = (S0, R2, Y, v, chi_nb), got shape {p.shape}")
    return p


def qq_jacobian(params, te_s: Sequence[float] = QQNET_TE_S, B0: float = B0_DEFAULT):
    """Analytic Jacobian of the QQ model (:func:`qmri.physics.qq.qq_model`).

    Args:
        params: (N, 5) physical parameters (S0 a.u., R2 1/s, Y fraction, v fraction, chi_nb ppm).
        te_s: echo times [s].
        B0: field strength [T].

    Returns:
        ``(S, J_S, j_chi)``: echo magnitudes (N, E) [units of S0]; their derivatives (N, E, 5)
        [units of S0 per parameter unit]; derivatives of the QSM value (N, 5) [ppm per parameter
        unit]. float64 numpy. At the kink of |Hct dchi0 (1-Y) + chi_ba - chi_nb| = 0 the one-sided
        derivative of the positive branch is used.
    """
    S0, R2, Y, v, cnb = _params(params).T
    S, _, JS, jc = qq_model(S0, R2, Y, v, cnb, np.asarray(te_s, dtype=np.float64), B0)
    return S, JS, jc


def _fisher_parts(params, te_s, B0):
    """Signal Fisher information at sigma = 1 (N,5,5) and QSM information at sd = 1 (N,5,5)."""
    _, JS, jc = qq_jacobian(params, te_s, B0)
    return np.einsum("nei,nej->nij", JS, JS), jc[:, :, None] * jc[:, None, :]


def fisher_information(
    params,
    te_s: Sequence[float] = QQNET_TE_S,
    sigma_signal=1.0,
    qsm_sd_ppm: float = QSM_SD_PPM,
    B0: float = B0_DEFAULT,
) -> np.ndarray:
    """Per-voxel Fisher information ``J^T C^-1 J`` of the E echo magnitudes plus the QSM value.

    Args:
        params: (N, 5) physical parameters (S0 a.u., R2 1/s, Y, v fractions, chi_nb ppm).
        te_s: echo times [s].
        sigma_signal: noise sd of each echo magnitude, scalar or (N,), same units as S0 (the
            simulator uses brain-mean echo-1 magnitude / SNR; Gaussian high-SNR limit of Rician).
        qsm_sd_ppm: noise sd of the QSM value [ppm]; ``np.inf`` drops the QSM channel.
        B0: field strength [T].

    Returns:
        (N, 5, 5) float64; entry (i, j) in 1/(unit_i unit_j) of the parameters (S0 a.u., R2 1/s,
        Y, v, chi_nb ppm).
    """
    A, B = _fisher_parts(params, te_s, B0)
    sig = np.broadcast_to(np.asarray(sigma_signal, dtype=np.float64), (A.shape[0],))
    wq = 0.0 if not np.isfinite(qsm_sd_ppm) else 1.0 / float(qsm_sd_ppm) ** 2
    return A / (sig**2)[:, None, None] + wq * B


def _ginv_psd(M: np.ndarray) -> np.ndarray:
    """Generalised inverse of a batch of PSD matrices (..., k, k): Jacobi scaling + pinv(RCOND)."""
    d = np.sqrt(np.clip(np.diagonal(M, axis1=-2, axis2=-1), 0.0, None))
    d = np.where(d > 0, d, 1.0)
    Ms = M / (d[..., :, None] * d[..., None, :])
    return np.linalg.pinv(Ms, rcond=RCOND, hermitian=True) / (d[..., :, None] * d[..., None, :])


def schur_information(fisher: np.ndarray, shared: Sequence[str] = ("Y",)) -> np.ndarray:
    """Per-voxel information on the ``shared`` parameters with all other parameters free.

    ``I_ss - I_sn (I_nn)^+ I_ns`` (generalised inverse, see the module docstring) for a (N, 5, 5)
    Fisher array; returns (N, k, k), k = len(shared), in the order given.
    """
    s = [_IDX[n] for n in shared]
    n = [i for i in range(5) if i not in s]
    F = np.asarray(fisher, dtype=np.float64)
    Iss = F[:, s][:, :, s]
    Isn = F[:, s][:, :, n]
    Inn = F[:, n][:, :, n]
    out = Iss - Isn @ _ginv_psd(Inn) @ np.swapaxes(Isn, 1, 2)
    return 0.5 * (out + np.swapaxes(out, 1, 2))


def _var_first(info: np.ndarray) -> np.ndarray:
    """[info^-1]_00 for (..., k, k) PSD info; inf where (Jacobi-scaled) info is singular."""
    d = np.sqrt(np.clip(np.diagonal(info, axis1=-2, axis2=-1), 0.0, None))
    ok_d = np.all(d > 0, axis=-1)
    d = np.where(d > 0, d, 1.0)
    Ms = info / (d[..., :, None] * d[..., None, :])
    w = np.linalg.eigvalsh(Ms)
    ok = ok_d & (w[..., 0] > RCOND * np.maximum(w[..., -1], 0.0)) & (w[..., -1] > 0)
    Ms_safe = np.where(ok[..., None, None], Ms, np.eye(Ms.shape[-1]))
    var = np.linalg.inv(Ms_safe)[..., 0, 0] / d[..., 0] ** 2
    return np.where(ok, var, np.inf)


def oef_crb_voxel(
    params,
    te_s: Sequence[float] = QQNET_TE_S,
    sigma_signal=1.0,
    qsm_sd_ppm: float = QSM_SD_PPM,
    B0: float = B0_DEFAULT,
) -> np.ndarray:
    """Per-voxel CRB of OEF [%-points], all 5 parameters free: ``100/Ya sqrt([I^-1]_YY)``.

    Arguments as :func:`fisher_information`. Returns (N,); inf where Y is not identifiable.
    """
    F = fisher_information(params, te_s, sigma_signal, qsm_sd_ppm, B0)
    return 100.0 / YA * np.sqrt(_var_first(schur_information(F, ("Y",))))


def oef_crb_region(
    params,
    te_s: Sequence[float] = QQNET_TE_S,
    sigma_signal=1.0,
    qsm_sd_ppm: float = QSM_SD_PPM,
    B0: float = B0_DEFAULT,
    shared: Sequence[str] = ("Y",),
    n_voxels: float | None = None,
) -> float:
    """CRB [%-points] of the common OEF of a region whose ``shared`` parameters are one unknown each.

    The other parameters are free per voxel (sum over voxels of the Schur complements, module
    docstring). ``shared`` must contain "Y"; ("Y", "v") also shares the blood volume (the bound
    is the Y entry of the inverse of the 2x2 region information). The shared parameters' Fisher
    entries are evaluated at each row's own value, so give equal values in all rows for a
    consistent model.

    Args:
        params: (N, 5) physical parameters of the region's voxels (units as
            :func:`fisher_information`).
        sigma_signal: echo-magnitude noise sd, scalar or (N,), units of S0.
        qsm_sd_ppm: QSM noise sd [ppm] (``np.inf``: signal only).
        n_voxels: None -> the rows are the region's voxels (information summed). A number ->
            the rows are a sample of the region's voxels and the region information is
            ``n_voxels`` times the mean per-row information (expected information of a region
            of that many voxels drawn like the rows).

    Returns:
        sd of the region OEF in %-points (float; inf if not identifiable).
    """
    if "Y" not in shared:
        raise ValueError("shared must contain 'Y'")
    F = fisher_information(params, te_s, sigma_signal, qsm_sd_ppm, B0)
    shared = ["Y"] + [n for n in shared if n != "Y"]
    S = schur_information(F, shared)
    info = S.sum(0) if n_voxels is None else float(n_voxels) * S.mean(0)
    return float(100.0 / YA * np.sqrt(_var_first(info)))


def region_voxels(diameter_mm: float, voxel_mm: float = 2.0, method: str = "grid") -> int:
    """Number of voxels of an isotropic grid (``voxel_mm`` [mm]) in a sphere of ``diameter_mm`` [mm].

    ``method="grid"``: voxel centres on the lattice ``voxel_mm * Z^3`` with the sphere centred on
    one centre, counting centres with distance <= radius (20 mm at 2 mm: 515). ``"volume"``:
    ``round(pi d^3 / 6 / voxel_mm^3)`` (20 mm at 2 mm: 524). At least 1.
    """
    r = 0.5 * float(diameter_mm) / float(voxel_mm)
    if method == "volume":
        return max(1, int(round(4.0 / 3.0 * np.pi * r**3)))
    if method != "grid":
        raise ValueError("method must be 'grid' or 'volume'")
    k = int(np.floor(r))
    g = np.arange(-k, k + 1)
    d2 = g[:, None, None] ** 2 + g[None, :, None] ** 2 + g[None, None, :] ** 2
    return max(1, int(np.count_nonzero(d2 <= r * r + 1e-9)))


def tissue_draws(tissue: str, Y: float, n: int, rng: np.random.Generator, spread: float = 1.0, v_factor: float = 1.0) -> np.ndarray:
    """(n, 5) voxels of a tissue ("GM" or "WM"): Y fixed; S0, R2, v, chi_nb drawn ~ N(mean,
    spread * prior sd) of :data:`TISSUES` (the phantom's priors), clipped to the QQ-NET bounds
    (S0 >= 0.05); ``v_factor`` scales v's mean and sd (a lesion whose blood volume changed, e.g.
    0.3-0.7 in an infarct core). Units as :func:`fisher_information`."""
    pri = TISSUES[tissue.upper()]
    out = np.empty((n, 5))
    out[:, 2] = Y
    for name in ("S0", "R2", "v", "chi_nb"):
        m, sd = pri[name]
        if name == "v":
            m, sd = m * v_factor, sd * v_factor
        a = m + spread * sd * rng.standard_normal(n)
        out[:, _IDX[name]] = np.maximum(a, 0.05) if name == "S0" else np.clip(a, *PARAM_BOUNDS[name])
    return out


def tissue_mean(tissue: str, Y: float) -> np.ndarray:
    """(1, 5) tissue-mean parameters of :data:`TISSUES` with the given Y."""
    pri = TISSUES[tissue.upper()]
    return np.array([[pri["S0"][0], pri["R2"][0], Y, pri["v"][0], pri["chi_nb"][0]]])


def tissue_sigma(tissue: str, snr: float, te_s: Sequence[float] = QQNET_TE_S, Y: float = 0.6, B0: float = B0_DEFAULT) -> float:
    """Echo-magnitude noise sd = echo-1 magnitude of the tissue-mean voxel / SNR [units of S0].

    The simulator divides the brain-mean echo-1 magnitude by the SNR; a tissue's own echo-1
    magnitude is a close stand-in (GM 0.81, WM 0.69 at TE1 = 4.5 ms, Y = 0.6).
    """
    p = tissue_mean(tissue, Y)
    e1 = qbold_magnitude(*p.T, te_s=np.asarray(te_s)[:1], B0=B0)[0, 0]
    return float(e1) / float(snr)


def _region_parts(tissue, Y, te_s, B0, n_draws, seed, spread, v_factor=1.0):
    """Schur inputs for a tissue: (signal info at sigma=1, QSM info at sd=1) for the draws (v free
    per voxel) and for the draws with v = tissue mean x ``v_factor`` (v shared)."""
    rng = np.random.default_rng(seed)
    P = tissue_draws(tissue, Y, n_draws, rng, spread, v_factor)
    Pv = P.copy()
    Pv[:, _IDX["v"]] = TISSUES[tissue.upper()]["v"][0] * v_factor
    return _fisher_parts(P, te_s, B0), _fisher_parts(Pv, te_s, B0)


def _crb_from_parts(parts, sigma, qsd, shared, n_vox):
    A, B = parts
    wq = 0.0 if not np.isfinite(qsd) else 1.0 / qsd**2
    S = schur_information(A / sigma**2 + wq * B, shared)
    return float(100.0 / YA * np.sqrt(_var_first(n_vox * S.mean(0))))


def crb_table(
    snrs: Sequence[float] = (50, 100, 200),
    diameters_mm: Sequence[float] = (8, 20, 40),
    voxel_mm: float = 2.0,
    te_s: Sequence[float] = QQNET_TE_S,
    tissue: str = "GM",
    oef_percent: Sequence[float] = (20, 37, 60),
    n_draws: int = 2000,
    qsm_sd_ppm: float = QSM_SD_PPM,
    B0: float = B0_DEFAULT,
    seed: int = 0,
    spread: float = 1.0,
    v_factor: float = 1.0,
) -> list[dict]:
    """Table of OEF CRBs [%-points] per (OEF, SNR, region diameter).

    ``v_factor`` scales the region's blood volume v (mean and sd; a lesion whose v changed); the
    noise sd stays that of the normal tissue (the simulator's noise is set by the brain's signal).

    Rows: ``tissue, oef_true`` [%], ``snr`` (echo-1 SNR of the tissue-mean voxel),
    ``diameter_mm``, ``voxels`` (:func:`region_voxels`, grid count), ``crb_voxel_pp`` (one
    tissue-mean voxel, all 5 parameters free), ``crb_voxel_median_pp`` (median over the draws),
    ``crb_region_Y_pp`` (Y shared, S0/R2/v/chi_nb free per voxel), ``crb_region_Yv_pp`` (Y and v
    shared; the draws' v set to the tissue mean). Region information = voxels x mean per-voxel
    Schur information over ``n_draws`` seeded draws of S0, R2, v, chi_nb ~ N(prior mean,
    spread x prior sd) (:func:`tissue_draws`). sigma_signal = :func:`tissue_sigma` (tissue-mean
    echo-1 magnitude / SNR), the same for all voxels; QSM noise sd ``qsm_sd_ppm`` [ppm].
    """
    rows = []
    for oef in oef_percent:
        Y = float(y_from_oef(oef / 100.0))
        parts, parts_v = _region_parts(tissue, Y, te_s, B0, n_draws, seed, spread, v_factor)
        Pd = tissue_draws(tissue, Y, n_draws, np.random.default_rng(seed), spread, v_factor)
        for snr in snrs:
            sig = tissue_sigma(tissue, snr, te_s, Y, B0)
            mean_voxel = tissue_mean(tissue, Y)
            mean_voxel[:, _IDX["v"]] *= v_factor
            cv = float(oef_crb_voxel(mean_voxel, te_s, sig, qsm_sd_ppm, B0)[0])
            cvm = float(np.median(oef_crb_voxel(Pd, te_s, sig, qsm_sd_ppm, B0)))
            for d in diameters_mm:
                n = region_voxels(d, voxel_mm)
                rows.append(
                    {
                        "tissue": tissue.upper(),
                        "oef_true": float(oef),
                        "v_factor": float(v_factor),
                        "snr": float(snr),
                        "diameter_mm": float(d),
                        "voxels": n,
                        "crb_voxel_pp": cv,
                        "crb_voxel_median_pp": cvm,
                        "crb_region_Y_pp": _crb_from_parts(parts, sig, qsm_sd_ppm, ("Y",), n),
                        "crb_region_Yv_pp": _crb_from_parts(parts_v, sig, qsm_sd_ppm, ("Y", "v"), n),
                    }
                )
    return rows


def protocol_needed(
    target_pp: float = 5.0,
    diameter_mm: float = 20.0,
    protocols: dict[str, Sequence[float]] | None = None,
    tissue: str = "GM",
    oef_percent: float = 37.0,
    shared: Sequence[str] = ("Y",),
    voxel_mm: float = 2.0,
    qsm_sd_ppm: float = QSM_SD_PPM,
    n_draws: int = 2000,
    B0: float = B0_DEFAULT,
    seed: int = 0,
    spread: float = 1.0,
    snr_max: float = 1e5,
) -> list[dict]:
    """Smallest echo-1 SNR at which the region OEF CRB reaches ``target_pp`` [%-points].

    For each protocol (name -> echo times [s]; default :data:`PROTOCOLS`), the region of
    ``diameter_mm`` [mm] (:func:`region_voxels`) is set up as in :func:`crb_table` (``shared`` =
    ("Y",) or ("Y", "v")). The Fisher information is ``SNR^2 A + B`` (A: signal part at unit SNR,
    B: QSM part, which does not scale), so the CRB falls monotonically with SNR; the SNR is found
    by bisection in log SNR (relative precision 1e-4). SNR is per echo and referred to the
    tissue's echo-1 magnitude at that protocol's TE1; the bandwidth/scan-time cost of more echoes
    is not modelled. Rows: ``protocol, n_echoes, te_first_ms, te_last_ms, target_pp,
    diameter_mm, voxels, snr_needed`` (inf if not reached by ``snr_max``), ``crb_at_snr100_pp``.
    """
    protocols = PROTOCOLS if protocols is None else protocols
    Y = float(y_from_oef(oef_percent / 100.0))
    n = region_voxels(diameter_mm, voxel_mm)
    sh = ["Y"] + [s for s in shared if s != "Y"]
    rows = []
    for name, te in protocols.items():
        te = tuple(float(t) for t in te)
        parts, parts_v = _region_parts(tissue, Y, te, B0, n_draws, seed, spread)
        pr = parts_v if "v" in sh else parts
        e1 = tissue_sigma(tissue, 1.0, te, Y, B0)  # echo-1 magnitude

        def crb(snr):
            return _crb_from_parts(pr, e1 / snr, qsm_sd_ppm, sh, n)

        lo, hi = np.log(1e-2), np.log(snr_max)
        if crb(np.exp(hi)) > target_pp:
            need = float("inf")
        else:
            while hi - lo > 1e-4:
                mid = 0.5 * (lo + hi)
                lo, hi = (mid, hi) if crb(np.exp(mid)) > target_pp else (lo, mid)
            need = float(np.exp(hi))
        rows.append(
            {
                "protocol": name,
                "n_echoes": len(te),
                "te_first_ms": 1000 * te[0],
                "te_last_ms": 1000 * te[-1],
                "target_pp": float(target_pp),
                "diameter_mm": float(diameter_mm),
                "voxels": n,
                "snr_needed": need,
                "crb_at_snr100_pp": crb(100.0),
            }
        )
    return rows


def crb_markdown(rows: list[dict], digits: int = 1) -> str:
    """Markdown table of a list of dict rows (floats with ``digits`` decimals)."""
    if not rows:
        return ""
    keys = list(rows[0])
    fmt = lambda x: f"{x:.{digits}f}" if isinstance(x, float) else str(x)  # noqa: E731
    lines = ["| " + " | ".join(keys) + " |", "|" + "---|" * len(keys)]
    lines += ["| " + " | ".join(fmt(r[k]) for k in keys) + " |" for r in rows]
    return "\n".join(lines)
