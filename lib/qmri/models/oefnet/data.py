"""Training data for the OEF networks: phantom volumes (noise added per batch) and datastore studies.

A phantom volume holds the *noiseless* QQ echo magnitudes and QSM of one parameter draw
(:func:`qmri.physics.qq_phantom.draw_qq_parameters`, lesions included) on one phantom anatomy;
every batch adds fresh Rician noise at an echo-1 SNR drawn uniformly from :data:`SNR_RANGE` and
Gaussian QSM noise (0.005 ppm, as the study simulation), so the networks see many SNRs. A study
volume (from the MONAI Label datastore) already carries its noise and is used as is.

Units: magnitudes a.u., QSM and chi_nb ppm, R2 1/s, Y and v fractions, echo times ms.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

import numpy as np

from .net import FEATURES_VERSION, N_ECHOES, normalise_params
from .predict import mask_bbox, prepare_input
from ...physics.qq import PARAM_NAMES, QQNET_TE_S, add_noise, qbold_magnitude, qq_susceptibility
from ...physics.qq_phantom import PHANTOM_VERSION, draw_qq_parameters
from ...simulate.driver import task_rng
from ...simulate.oef import QSM_NOISE_PPM

log = logging.getLogger(__name__)
SNR_RANGE = (40.0, 250.0)  # echo-1 SNR drawn per training example
TE_MS = tuple(round(1000 * t, 3) for t in QQNET_TE_S)


@dataclass
class OEFVolume:
    """One training/validation volume, cropped to the brain's bounding box.

    ``signal`` (X, Y, Z, 8) echo magnitudes (a.u.), ``chi`` (X, Y, Z) QSM (ppm), ``params``
    (X, Y, Z, 5) true S0 (a.u., absolute), R2 (1/s), Y, v, chi_nb (ppm); ``mask`` brain;
    ``noiseless``: noise is added per batch (phantoms) or not (studies); ``sigma_ref``: mean echo-1
    magnitude in the brain (noise sigma = sigma_ref / SNR).
    """

    signal: np.ndarray
    chi: np.ndarray
    params: np.ndarray
    mask: np.ndarray
    noiseless: bool
    name: str
    te_ms: tuple[float, ...] = TE_MS

    @property
    def subject(self) -> str:
        return self.name

    @property
    def sigma_ref(self) -> float:
        return float(self.signal[..., 0][self.mask].mean())


def phantom_volumes(seed: int, draws: int = 1, voxel_size_mm: float = 2.0, lesions: str = "auto") -> list[OEFVolume]:
    """``draws`` noiseless parameter draws on the phantom anatomy of ``seed`` (QQ-NET echo times)."""
    from ...anatomy.phantom import make_subject

    s = make_subject(seed, voxel_size_mm, lesions=lesions, subject_id=f"oef-train-{seed}")
    rng = task_rng("oef-train", seed)
    out = []
    for d in range(draws):
        p = draw_qq_parameters(s.labels, s.lesions, s.voxel_size_mm, rng, probseg=s.probseg)
        box = mask_bbox(p["mask"], 3)
        mask = p["mask"][box]
        par = np.stack([p[n][box] for n in PARAM_NAMES], -1).astype(np.float32)
        sig = qbold_magnitude(*[par[..., k].astype(np.float64) for k in range(5)], np.asarray(TE_MS) / 1000.0)
        sig = np.where(mask[..., None], sig, 0.0).astype(np.float32)
        chi = np.where(mask, qq_susceptibility(par[..., 2], par[..., 3], par[..., 4]), 0.0).astype(np.float32)
        out.append(OEFVolume(sig, chi, np.where(mask[..., None], par, 0.0), mask, True, f"{s.subject_id}-draw{d}"))
    return out


def cached_phantom_volumes(seeds: Iterable[int], draws: int, cache_dir: str | Path | None, voxel_size_mm: float = 2.0, lesions: str = "auto") -> list[OEFVolume]:
    """:func:`phantom_volumes` for each seed, cached as ``.npz`` in ``cache_dir`` (None: no cache)."""
    out = []
    for seed in seeds:
        f = Path(cache_dir) / f"oef{PHANTOM_VERSION}_{seed}_{draws}_{voxel_size_mm:g}mm_{lesions}.npz" if cache_dir else None
        if f is not None and f.exists():
            z = np.load(f)
            out += [OEFVolume(z[f"signal{d}"], z[f"chi{d}"], z[f"params{d}"], z[f"mask{d}"], True, f"oef-train-{seed}-draw{d}") for d in range(draws)]
            continue
        vols = phantom_volumes(seed, draws, voxel_size_mm, lesions)
        if f is not None:
            f.parent.mkdir(parents=True, exist_ok=True)
            arrays = {}
            for d, v in enumerate(vols):
                arrays.update({f"signal{d}": v.signal, f"chi{d}": v.chi, f"params{d}": v.params, f"mask{d}": v.mask})
            np.savez(f, **arrays)
        out += vols
    return out


def with_noise(vol: OEFVolume, snr: float, rng: np.random.Generator) -> OEFVolume:
    """A noisy copy of a noiseless volume at echo-1 SNR ``snr`` (fixed validation data)."""
    sig, chi = noisy_patch(vol, tuple(slice(None) for _ in range(3)), snr, rng)
    return OEFVolume(sig, chi, vol.params, vol.mask, False, f"{vol.name}-snr{snr:g}", vol.te_ms)


def noisy_patch(vol: OEFVolume, box: tuple[slice, ...], snr: float | None, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Echo magnitudes and QSM of ``vol[box]``; noise added when the volume is noiseless."""
    sig, chi, mask = vol.signal[box], vol.chi[box], vol.mask[box]
    if not vol.noiseless:
        return sig, chi
    sigma = vol.sigma_ref / float(snr)
    sig = add_noise(sig.astype(np.float64), snr, rng, kind="rician", sigma=sigma)
    sig = np.where(mask[..., None], sig, 0.0).astype(np.float32)
    chi = np.where(mask, chi + rng.normal(0.0, QSM_NOISE_PPM, chi.shape), 0.0).astype(np.float32)
    return sig, chi


def targets(params: np.ndarray, s1: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Normalised targets (..., 5): S0 relative to the measured echo-1 magnitude ``s1``; 0 outside ``mask``."""
    p = params.copy()
    p[..., 0] = np.where(mask, p[..., 0] / np.where(s1 > 0, s1, 1.0), 0.0)
    return np.where(mask[..., None], normalise_params(p), 0.0).astype(np.float32)


def sample_patch(vol: OEFVolume, size: int, rng: np.random.Generator, snr: float | None, flip: bool = True) -> dict[str, np.ndarray]:
    """A random ``size``^3 patch centred on a brain voxel: x (9, P, P, P), y (5, ...), m (1, ...)."""
    idx = np.argwhere(vol.mask)
    c = idx[rng.integers(len(idx))]
    shape = vol.mask.shape
    lo = [int(np.clip(c[a] - size // 2, 0, max(shape[a] - size, 0))) for a in range(3)]
    box = tuple(slice(lo[a], lo[a] + size) for a in range(3))
    sig, chi = noisy_patch(vol, box, snr, rng)
    mask = vol.mask[box]
    x, s1 = prepare_input(sig, chi, mask)
    y = targets(vol.params[box], s1, mask)
    pad = [(0, size - n) for n in mask.shape]
    x, y = np.pad(x, pad + [(0, 0)]), np.pad(y, pad + [(0, 0)])
    m = np.pad(mask, pad)
    if flip and rng.random() < 0.5:  # left-right flip (array axis 0)
        x, y, m = x[::-1], y[::-1], m[::-1]
    return {"x": np.moveaxis(x, -1, 0).copy(), "y": np.moveaxis(y, -1, 0).copy(), "m": m[None].astype(np.float32).copy()}


def sample_voxels(vols: list[OEFVolume], n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """``n`` random brain voxels over the volumes, each with its own SNR: x (n, 9), y (n, 5)."""
    xs, ys = [], []
    per = np.bincount(rng.integers(len(vols), size=n), minlength=len(vols))
    for vol, k in zip(vols, per):
        if k == 0:
            continue
        idx = np.argwhere(vol.mask)[rng.integers(int(vol.mask.sum()), size=k)]
        sig, chi, par = vol.signal[tuple(idx.T)], vol.chi[tuple(idx.T)], vol.params[tuple(idx.T)]
        if vol.noiseless:
            snr = rng.uniform(*SNR_RANGE, size=(k, 1))
            sigma = vol.sigma_ref / snr
            sig = np.sqrt((sig + rng.normal(0, 1, sig.shape) * sigma) ** 2 + (rng.normal(0, 1, sig.shape) * sigma) ** 2).astype(np.float32)
            chi = (chi + rng.normal(0.0, QSM_NOISE_PPM, chi.shape)).astype(np.float32)
        ones = np.ones(k, dtype=bool)
        x, s1 = prepare_input(sig, chi, ones)
        xs.append(x)
        ys.append(targets(par, s1, ones))
    return {"x": np.concatenate(xs), "y": np.concatenate(ys)}


@dataclass
class FeatureBank:
    """The fixed context features of one noisy volume's brain voxels, for the voxel-batched networks.

    ``f`` (N, n_features) :meth:`~qmri.models.oefnet.net.ContextNet.features`, ``y`` (N, 5)
    normalised targets, ``x`` (N, 9) the normalised input (for the physics term); N is every brain
    voxel or a random subset of them; ``name`` the volume's name and ``snr`` its echo-1 SNR (None:
    a study, noisy as recorded).
    """

    f: np.ndarray
    y: np.ndarray
    x: np.ndarray
    name: str
    snr: float | None = None
    summary: np.ndarray | None = None  # whole-brain statistics of the banked voxels, computed on first use


def feature_bank(vol: OEFVolume, snr: float | None, rng: np.random.Generator, max_voxels: int | None = None, feature_kwargs: dict | None = None) -> FeatureBank:
    """Noise ``vol`` (if noiseless) at echo-1 SNR ``snr`` and bank its brain voxels' context features
    (``feature_kwargs``: ``sigmas`` / ``coarse_from`` of the network they are for; default the current ones)."""
    import torch

    from .net import ContextNet

    sig, chi = noisy_patch(vol, (slice(None),) * 3, snr, rng)
    x, s1 = prepare_input(sig, chi, vol.mask)
    from .net import DEFAULT_FEATURES

    with torch.no_grad():
        f = ContextNet(**(DEFAULT_FEATURES if feature_kwargs is None else feature_kwargs)).brain_features(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x, -1, 0)))[None], torch.from_numpy(vol.mask)).numpy()
    y, xv = targets(vol.params, s1, vol.mask)[vol.mask], x[vol.mask]
    if max_voxels is not None and len(f) > max_voxels:
        keep = np.sort(rng.choice(len(f), size=max_voxels, replace=False))
        f, y, xv = f[keep], y[keep], xv[keep]
    return FeatureBank(np.ascontiguousarray(f), np.ascontiguousarray(y), np.ascontiguousarray(xv), vol.name, snr if vol.noiseless else None)


def _anatomy_banks(seed: int, draws: int, max_voxels: int, voxel_size_mm: float, cache_dir) -> list[FeatureBank]:
    """Banks of ``draws`` parameter draws on anatomy ``seed``, each noised at its own SNR ~ U(SNR_RANGE)."""
    name = f"oefbank{FEATURES_VERSION}p{PHANTOM_VERSION}_{seed}_{draws}_{max_voxels}_{voxel_size_mm:g}mm.npz"  # the version: banks of older features are not reused
    f = Path(cache_dir) / name if cache_dir else None
    if f is not None and f.exists():
        z = np.load(f)
        return [FeatureBank(z[f"f{d}"], z[f"y{d}"], z[f"x{d}"], str(z[f"name{d}"]), float(z[f"snr{d}"])) for d in range(draws)]
    rng = task_rng("oef-bank", seed)
    banks = [feature_bank(v, rng.uniform(*SNR_RANGE), rng, max_voxels) for v in phantom_volumes(seed, draws, voxel_size_mm, lesions="all")]
    if f is not None:
        f.parent.mkdir(parents=True, exist_ok=True)
        arrays = {}
        for d, b in enumerate(banks):
            arrays.update({f"f{d}": b.f, f"y{d}": b.y, f"x{d}": b.x, f"name{d}": np.array(b.name), f"snr{d}": np.array(b.snr)})
        np.savez(f, **arrays)
    return banks


def _one_thread() -> None:
    """Worker initialiser: one torch thread per anatomy process (the workers share the cores)."""
    import torch

    torch.set_num_threads(1)


def phantom_feature_banks(seeds: Iterable[int], draws: int, max_voxels: int, voxel_size_mm: float = 2.0, workers: int = 1, cache_dir: str | Path | None = None) -> list[FeatureBank]:
    """Feature banks of ``draws`` parameter draws (all lesion types) on each phantom anatomy of ``seeds``.

    Many subject-level draws are what the whole-brain summary of :class:`~qmri.models.oefnet.net.SetContextNet`
    learns from, and whole volumes of them do not fit in memory, so each volume is noised once (its
    own SNR ~ U(:data:`SNR_RANGE`)), featurised, subsampled to ``max_voxels`` brain voxels and
    dropped. Anatomies are generated in ``workers`` processes (in order); ``cache_dir`` caches each
    anatomy's banks as ``.npz``.
    """
    from concurrent.futures import ProcessPoolExecutor

    seeds = list(seeds)
    args = [(s, draws, max_voxels, voxel_size_mm, cache_dir) for s in seeds]
    out: list[FeatureBank] = []
    if workers > 1 and len(seeds) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(seeds)), initializer=_one_thread) as pool:
            for i, banks in enumerate(pool.map(_anatomy_banks, *zip(*args))):
                out += banks
                log.info("feature banks: anatomy %d/%d (seed %d), %d volumes", i + 1, len(seeds), seeds[i], len(out))
        return out
    for i, a in enumerate(args):
        out += _anatomy_banks(*a)
        log.info("feature banks: anatomy %d/%d (seed %d), %d volumes", i + 1, len(seeds), seeds[i], len(out))
    return out


def volumes_from_studies(pairs: Iterable[tuple[str | Path, str | Path]]) -> list[OEFVolume]:
    """One noisy :class:`OEFVolume` per ``oef`` study (8 echoes + QSM, ``labels/final`` = 5 QQ maps).

    Studies of other tasks are skipped; an OEF study whose echo times differ from the networks'
    (QQ-NET's 4.5..39.5 ms) is skipped with a warning.
    """
    import nibabel as nib

    from ...io.study import image_id, task_studies

    out = []
    for image, label, meta in task_studies(pairs, "oef"):
        te = tuple(float(t) for t in meta.get("echo_times_ms", ()))
        if len(te) != N_ECHOES or not np.allclose(te, TE_MS, atol=0.05):
            log.warning("skipping %s: echo times %s ms differ from the networks' %s ms", image, te, TE_MS)
            continue
        img = np.asarray(nib.load(str(image)).dataobj, dtype=np.float32)
        par = np.asarray(nib.load(str(label)).dataobj, dtype=np.float32)
        if par.shape != img.shape[:3] + (5,):
            raise ValueError(f"target of {Path(image).name} has shape {par.shape}; expected {img.shape[:3] + (5,)} (S0, R2, Y, v, chi_nb)")
        sig, chi = img[..., :N_ECHOES], img[..., N_ECHOES]
        mask = (chi != 0) & (sig[..., 0] > 0)
        box = mask_bbox(mask, 3)
        out.append(OEFVolume(sig[box], chi[box], np.where(mask[box][..., None], par[box], 0.0), mask[box], False, image_id(image), te))
    return out
