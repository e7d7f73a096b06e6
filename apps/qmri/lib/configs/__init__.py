"""One ``TaskConfig`` per task; each module here is discovered by ``main.QMRIApp``."""
