"""NIfTI and sidecar I/O in the project's study layout."""
