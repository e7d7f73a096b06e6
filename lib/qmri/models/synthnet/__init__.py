"""scCycleGAN: T2w MR <-> CT (HU) generators and discriminators in one checkpoint.

``net`` (ResNet generators, PatchGAN discriminators, HU scaling), ``loss`` (the scCycleGAN's
structure-consistency losses), ``predict`` (slice-wise inference with test-time flips/offsets),
``data`` (unpaired phantom pools), ``targets`` (pseudo-targets and back-translation), ``train``,
``cli``, ``fine_tune``, ``recipes/``. Served by ``synthetic_ct`` and ``synthetic_mr``.
"""
