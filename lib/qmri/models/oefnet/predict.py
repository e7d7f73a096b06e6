"""OEF networks at inference: loading, QQ-NET input normalisation, echo-time check, whole-volume prediction.

Input normalisation (as QQ-NET): every echo magnitude is divided by the measured echo-1 magnitude
of its voxel; the QSM (ppm) is multiplied by :data:`~qmri.models.oefnet.net.CHI_INPUT_SCALE`; both
are 0 outside the brain mask. The network's S0 is therefore relative to echo 1 and is multiplied
back by the echo-1 magnitude to give S0 in the input's units.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import torch

from ...physics.qq import PARAM_LOWER, PARAM_NAMES, PARAM_UPPER, QQNET_STD, YA, oef_from_y
from ...networks.checkpoint import load_checkpoint
from .net import CHI_INPUT_SCALE, N_ECHOES, UNET_DIVISOR, build, checkpoint_arch_kwargs, denormalise, is_voxelwise, uses_context_features

TE_TOLERANCE_MS = 0.05
INPUT_CLIP = 3.0  # normalised echoes are clipped to [0, 3] (noise in dark voxels can exceed 1 a lot)
LSTM_CHUNK = 32768  # voxels per LSTM forward pass


class OEFNet:
    """A loaded OEF network: ``net`` (eval mode), ``config`` (from the checkpoint) and its echo times."""

    def __init__(self, net: torch.nn.Module, config: dict):
        self.net = net
        self.config = config
        self.arch = config["arch"]
        self.echo_times_ms = [float(t) for t in config["echo_times_ms"]]

    def check_echo_times(self, te_ms) -> None:
        """Raise ValueError (HTTP 422 in the app) unless ``te_ms`` equals the training echo times."""
        te = [float(t) for t in te_ms]
        exp = self.echo_times_ms
        if len(te) != len(exp) or any(abs(a - b) > TE_TOLERANCE_MS for a, b in zip(te, exp)):
            raise ValueError(f"the {self.config.get('model', self.arch)} OEF network was trained for echo times {exp} ms; this study has {te} ms. Resample/acquire with those echo times or use method 'qq_fit' (any echo times).")


def load_oef_net(path: str | Path, device: str = "cpu") -> OEFNet:
    """Load a checkpoint written by the OEF trainer (``qmri train oef``)."""
    state, cfg = load_checkpoint(path, device)
    net = build(cfg["arch"], **checkpoint_arch_kwargs(cfg)).to(device)
    net.load_state_dict(state)
    net.eval()
    return OEFNet(net, cfg)


def prepare_input(mag: np.ndarray, chi: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """QQ-NET-normalised network input (..., 9) float32 and the echo-1 magnitude (...,).

    ``mag`` (..., 8) echo magnitudes (any unit), ``chi`` (...) QSM in ppm, ``mask`` boolean brain.
    """
    mag = np.asarray(mag, dtype=np.float32)
    if mag.shape[-1] != N_ECHOES:
        raise ValueError(f"the OEF networks take {N_ECHOES} echo magnitudes, got {mag.shape[-1]}")
    s1 = mag[..., 0]
    ok = mask & (s1 > 0)
    x = np.zeros(mag.shape[:-1] + (N_ECHOES + 1,), dtype=np.float32)
    v = mag[ok]  # (N, 8): only the brain voxels are computed
    x[ok, :N_ECHOES] = np.clip(v / v[:, :1], 0.0, INPUT_CLIP)
    x[ok, N_ECHOES] = np.asarray(chi)[ok] * CHI_INPUT_SCALE
    return x, s1


def mask_bbox(mask: np.ndarray, margin: int = 2) -> tuple[slice, ...]:
    """Bounding box of ``mask`` grown by ``margin`` voxels (clipped to the array)."""
    idx = np.argwhere(mask)
    lo = np.maximum(idx.min(0) - margin, 0)
    hi = np.minimum(idx.max(0) + 1 + margin, mask.shape)
    return tuple(slice(int(a), int(b)) for a, b in zip(lo, hi))


@torch.no_grad()
def predict_voxels(net: torch.nn.Module, arch: str, x: np.ndarray, mask: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Network output (N, 5) in normalised units at the N ``mask`` voxels (C order) of a prepared input ``x`` (X, Y, Z, 9)."""
    if is_voxelwise(arch):
        v = x[mask]
        res = [net(torch.from_numpy(v[i : i + LSTM_CHUNK]).to(device)).cpu().numpy() for i in range(0, len(v), LSTM_CHUNK)]
        return np.concatenate(res) if res else np.zeros((0, 5), np.float32)
    box = mask_bbox(mask)
    mb = mask[box]
    if uses_context_features(arch):  # fixed multi-scale features of the brain box, then the MLP(s) on brain voxels only
        f = net.brain_features(torch.from_numpy(np.ascontiguousarray(np.moveaxis(x[box], -1, 0)))[None].to(device), torch.from_numpy(np.ascontiguousarray(mb)).to(device))
        return net.predict_brain(f).cpu().numpy()
    xb = np.moveaxis(x[box], -1, 0)
    shape = xb.shape[1:]
    div = UNET_DIVISOR if arch == "unet" else 1
    # U-Net: multiples of 16 and at least 32 voxels (instance norm needs > 1 voxel at the bottleneck)
    target = [max(n + (-n) % div, 2 * div if div > 1 else n) for n in shape]
    xb = np.pad(xb, [(0, 0)] + [(0, t - n) for t, n in zip(target, shape)])
    y = net(torch.from_numpy(xb[None]).to(device))[0].cpu().numpy()
    return np.moveaxis(y[:, : shape[0], : shape[1], : shape[2]], 0, -1)[mb]


def predict_normalised(net: torch.nn.Module, arch: str, x: np.ndarray, mask: np.ndarray, device: str = "cpu") -> np.ndarray:
    """Network output (X, Y, Z, 5) in normalised units for a prepared input ``x`` (X, Y, Z, 9), with a
    6th channel (log sd of Y, normalised) for an uncertainty head; 0 outside ``mask``."""
    z = predict_voxels(net, arch, x, mask, device)
    out = np.zeros(x.shape[:-1] + (z.shape[-1],), dtype=np.float32)
    out[mask] = z
    return out


def oef_sd_percent(log_sd: np.ndarray, sd_scale: float) -> np.ndarray:
    """OEF standard deviation (%-points) from the uncertainty head's log sd of Y (normalised units)
    and its calibration factor: sd_Y = exp(log_sd) x sd_scale x QQNET_STD[Y]; OEF = 1 - Y/Ya."""
    return 100.0 * np.exp(log_sd) * float(sd_scale) * float(QQNET_STD[2]) / YA


def has_uncertainty(model: "OEFNet") -> bool:
    """True when the network returns a per-voxel OEF sd (an uncertainty head)."""
    return bool(getattr(model.net, "uncertainty", False))


def predict_oef(model: OEFNet, mag: np.ndarray, chi: np.ndarray, mask: np.ndarray, te_ms, device: str = "cpu") -> dict[str, np.ndarray]:
    """QQ parameters and OEF inside ``mask`` from echo magnitudes (X, Y, Z, 8) and QSM (ppm).

    Returns float32 maps: S0 (input units), R2 (1/s), Y, v (fractions), chi_nb (ppm), OEF (%), and
    for a network with an uncertainty head OEF_sd (%-points, calibrated), each 0 outside the mask.
    Raises ValueError when ``te_ms`` differs from the training echo times.
    """
    model.check_echo_times(te_ms)
    mask = np.asarray(mask, bool)
    names = PARAM_NAMES + ("OEF",) + (("OEF_sd",) if has_uncertainty(model) else ())
    maps = {n: np.zeros(mask.shape, np.float32) for n in names}
    if not mask.any():
        return maps
    box = mask_bbox(mask)  # every network sees only this box of the brain
    mb = mask[box]
    x, s1 = prepare_input(np.asarray(mag)[box], np.asarray(chi)[box], mb)
    z = predict_voxels(model.net, model.arch, x, mb, device)
    if "OEF_sd" in maps:
        maps["OEF_sd"][box][mb] = oef_sd_percent(z[:, 5], float(model.net.sd_scale))
    p = np.clip(denormalise(z[:, :5]), PARAM_LOWER, PARAM_UPPER)  # physical bounds (the U-Net is bounded already)
    p[:, 0] *= s1[mb]  # S0 relative to echo 1 -> the input's units
    for k, n in enumerate(PARAM_NAMES):
        maps[n][box][mb] = p[:, k]
    maps["OEF"][box][mb] = 100.0 * oef_from_y(p[:, 2])
    return maps
