"""MONAI Label infer tasks (thin adapters over qmri's methods)."""
