"""PVCNet: PET-only partial-volume correction (SUV -> SUV), a residual MONAI UNet.

``net``, ``predict``, ``data`` (phantom PET at a drawn PSF FWHM in mm, RBV or true-activity
targets), ``train``, ``cli``, ``fine_tune``, ``recipes/`` (``pvcnet_fwhm``: conditioned on the FWHM,
the default; ``pvcnet``: PET only). Served by the ``pvc`` task.
"""
