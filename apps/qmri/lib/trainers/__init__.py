"""MONAI Label trainers (thin adapters over qmri's training code)."""
