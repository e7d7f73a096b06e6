"""The app's adapters (MONAI Label imports this package as ``lib`` from the app folder)."""
