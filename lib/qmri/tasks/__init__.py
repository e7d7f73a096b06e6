"""The product's tasks as server-free pipelines: validated input -> classical/network method -> maps.

Each module defines one :class:`~qmri.tasks.spec.TaskSpec`; the MONAI Label app turns each spec into
an infer task, the CLI and benchmarks call the same ``run``.
"""
