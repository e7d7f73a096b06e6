"""OEF networks: the five QQ parameters (S0, R2, Y, v, chi_nb) and OEF (%) from 8-echo GRE
magnitude + QSM (ppm).

``convention`` (input normalisation and output units shared by every architecture), ``pyramid``
(brain-masked Gaussian context features), ``net_context`` (the set-context network shipped as
``best``, with its ``OEF_sd`` head), ``net_seed`` (the seed papers' ``cnn3d`` and ``lstm``), ``net``
(one entry point over the architectures), ``predict``, ``data``, ``train``, ``cli``, ``fine_tune``,
``recipes/``. Served by the ``oef`` task.
"""
