"""Training data generation and training loops (server-free; the MONAI Label trainers adapt them)."""
