"""Physics forward models (signal equations, dipole convolution, PSF, tissue contrasts)."""
