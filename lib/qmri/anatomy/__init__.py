"""Digital head phantoms built from the MNI ICBM152 2009a maps that ship inside nilearn."""
