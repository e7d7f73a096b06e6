"""Training phantoms (seeds on the command line, 2 mm, SNR 100) pickled to /tmp/oef_partition for evaluate.py."""

import sys

from qmri.anatomy.phantom import make_subject
from qmri.simulate.driver import task_rng
from qmri.simulate.oef import simulate_oef_with_regions
import os, pickle

os.makedirs("/tmp/oef_partition", exist_ok=True)
for seed in map(int, sys.argv[1:]):
    s = make_subject(seed, 2.0, subject_id=f"t{seed}")
    st, regions = simulate_oef_with_regions(s, task_rng("oef", seed), snr=100.0)
    pickle.dump((st, regions, s.voxel_size_mm), open(f"/tmp/oef_partition/{seed}.pkl", "wb"))
    print(seed, st.image.shape, flush=True)
