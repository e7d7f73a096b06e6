"""Experiment (issue 25): an unrolled QSM network whose data consistency is the dipole model itself.

``chi_0`` = Tikhonov inversion of the field; then K times: a MONAI UNet (weights shared across the
iterations) proposes ``z = chi + UNet(chi, field, mask)``, and a closed-form data-consistency layer
returns ``argmin_chi ||D chi - f||^2 + lambda_k ||chi - z||^2`` (per k-space sample:
``(conj(D) F(f) + lambda_k F(z)) / (|D|^2 + lambda_k)``, on a 2x zero-padded grid, with the true
voxel size and B0 direction). Where the dipole kernel is large the field decides, in its cone the
network's prior does: the network only has to learn what the field cannot say, which is what should
carry over to fields from another simulator. Units: field and chi in ppm.
"""

import torch
from monai.networks.nets import UNet

from qmri.physics.dipole import crop_to, dipole_kernel, pad_to, padded_shape

FIELD_SCALE, CHI_SCALE = 20.0, 5.0  # as QSMnet: field x 20 and chi x 5 are O(1)


class UnrolledQSM(torch.nn.Module):
    def __init__(self, iterations: int = 3, channels=(24, 48, 96), lam0: float = 0.05):
        super().__init__()
        self.iterations = iterations
        self.prior = UNet(spatial_dims=3, in_channels=3, out_channels=1, channels=channels, strides=(2,) * (len(channels) - 1), num_res_units=1, norm="instance")
        # lambda_k = softplus(raw): the first for the initial Tikhonov inversion
        raw = torch.log(torch.expm1(torch.full((iterations + 1,), lam0)))
        self.raw_lam = torch.nn.Parameter(raw)

    def forward(self, field, mask, voxel_mm=(1.0, 1.0, 1.0), b0=(0.0, 0.0, 1.0)):
        """field, mask: (B, 1, X, Y, Z) ppm / {0, 1}; X, Y, Z divisible by 4. Returns chi (ppm) inside the mask."""
        shape = field.shape[-3:]
        grid = padded_shape(shape, True)
        d = dipole_kernel(grid, voxel_mm, b0, device=field.device, dtype=field.dtype, half=True)
        ff = torch.fft.rfftn(pad_to(field * mask, grid), dim=(-3, -2, -1))
        lam = torch.nn.functional.softplus(self.raw_lam)

        def dc(z, lam_k):
            zf = 0.0 if z is None else torch.fft.rfftn(pad_to(z, grid), dim=(-3, -2, -1))
            return crop_to(torch.fft.irfftn((d * ff + lam_k * zf) / (d * d + lam_k), s=grid, dim=(-3, -2, -1)), shape)

        chi = dc(None, lam[0]) * mask
        for k in range(self.iterations):
            z = chi + self.prior(torch.cat([chi * CHI_SCALE, field * FIELD_SCALE, mask], 1)) / CHI_SCALE
            chi = dc(z * mask, lam[k + 1]) * mask
        return chi
