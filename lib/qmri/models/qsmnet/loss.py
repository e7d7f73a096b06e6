"""QSMnet's training loss: L1 + 0.5 x model (dipole) loss + 0.1 x gradient loss (REFERENCE section 2).

* L1: mean |chi_pred - chi_true| over the brain mask.
* model loss: mean |M (D * chi_pred) - M (D * chi_true)| (the dipole-convolved difference, i.e. the
  field each map predicts, with the project's kernel :func:`qmri.physics.dipole.dipole_kernel`,
  periodic on the patch as in QSMnet's release).
* gradient loss: sum over the three axes of mean |M (grad chi_pred - grad chi_true)| (forward
  differences per voxel).

All maps in ppm; masked means divide by the number of mask voxels. Written here because MONAI has
no dipole-consistency loss; L1 and masking follow monai's conventions (B, C, X, Y, Z tensors).
"""

from __future__ import annotations

import torch
from torch import nn

from ...physics.dipole import dipole_kernel


def masked_mean(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    return (x * mask).sum() / mask.sum().clamp_min(1.0)


def dipole_convolve(chi: torch.Tensor, voxel_size_mm, b0_dir=(0.0, 0.0, 1.0)) -> torch.Tensor:
    """Periodic dipole convolution of (..., X, Y, Z) chi (ppm) -> field (ppm)."""
    shape = tuple(chi.shape[-3:])
    d = dipole_kernel(shape, voxel_size_mm, b0_dir, device=chi.device, dtype=chi.dtype, half=True)
    return torch.fft.irfftn(torch.fft.rfftn(chi, dim=(-3, -2, -1)) * d, s=shape, dim=(-3, -2, -1))


def spatial_gradients(x: torch.Tensor) -> list[torch.Tensor]:
    """Forward differences along the last three axes (zero at the far border)."""
    out = []
    for ax in (-3, -2, -1):
        g = torch.diff(x, dim=ax, append=x.narrow(ax, x.shape[ax] - 1, 1))
        out.append(g)
    return out


class QSMnetLoss(nn.Module):
    """``loss(pred, target, mask) -> (total, {"l1", "model", "gradient"})`` with maps in ppm."""

    def __init__(self, voxel_size_mm=2.0, b0_dir=(0.0, 0.0, 1.0), w_model: float = 0.5, w_gradient: float = 0.1):
        super().__init__()
        self.voxel_size_mm = voxel_size_mm
        self.b0_dir = b0_dir
        self.w_model = w_model
        self.w_gradient = w_gradient

    def forward(self, pred: torch.Tensor, target: torch.Tensor, mask: torch.Tensor):
        mask = mask.to(pred.dtype)
        l1 = masked_mean((pred - target).abs(), mask)
        model = masked_mean((dipole_convolve(pred - target, self.voxel_size_mm, self.b0_dir)).abs(), mask)
        grad = sum(masked_mean((gp - gt).abs(), mask) for gp, gt in zip(spatial_gradients(pred), spatial_gradients(target)))
        total = l1 + self.w_model * model + self.w_gradient * grad
        return total, {"l1": l1.detach(), "model": model.detach(), "gradient": grad.detach()}
