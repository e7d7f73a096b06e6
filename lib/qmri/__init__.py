"""qmri: quantitative MRI/PET/CT science, importable without the MONAI Label server."""

__version__ = "0.1.0"
