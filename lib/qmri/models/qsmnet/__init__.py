"""QSMnet+: a 3D U-Net from the local field (ppm) to susceptibility (ppm).

``net`` (the U-Net), ``loss`` (L1 + model loss + gradient loss), ``predict`` (checkpoint loading,
patch inference and the data-consistency step the served ``qsmnet`` adds), ``data`` (phantom
patches), ``data_randomised`` (domain-randomised patches), ``data_datastore`` (MONAI Label studies),
``train``, ``cli``, ``fine_tune``, ``recipes/``. Served by the ``qsm`` and ``qsm_raw`` tasks.
"""
