"""Thread oversubscription on this machine: N concurrent processes each mapping the 2 mm sample QSM
study with qsmnet (network + CG data consistency), under different thread settings.

Usage: python experiments/threads/measure.py  (prints a markdown table; ~5 min on 2 cores)
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
CHILD = r"""
import sys, time
from qmri.networks import compute
n = sys.argv[1]
compute.set_threads(None if n == "default" else int(n))
from qmri.infer_cli import infer
infer("qsm", sys.argv[2], sys.argv[3], overwrite=True)  # warm: weights, caches
t = time.perf_counter()
for _ in range(2):
    infer("qsm", sys.argv[2], sys.argv[3], overwrite=True)
print((time.perf_counter() - t) / 2)
"""


def run(procs: int, threads: str, env_extra: dict) -> list[float]:
    image = REPO / "sample-data" / "studies" / "sub-1000_qsm.nii.gz"
    env = dict(os.environ, **env_extra)
    ps = [subprocess.Popen([sys.executable, "-c", CHILD, threads, str(image), f"/tmp/thr_{i}"], stdout=subprocess.PIPE, text=True, env=env) for i in range(procs)]
    return [float(p.communicate()[0].strip().splitlines()[-1]) for p in ps]


if __name__ == "__main__":
    rows = []
    for procs, threads, env, label in [
        (1, "default", {}, "1 process, torch default threads"),
        (2, "default", {}, "2 processes, default threads (one pool per core each), OpenMP default wait policy"),
        (2, "default", {"OMP_WAIT_POLICY": "PASSIVE"}, "2 processes, default threads, OMP_WAIT_POLICY=PASSIVE"),
        (2, "1", {}, "2 processes, 1 thread each (cores / processes)"),
        (3, "default", {}, "3 processes, default threads"),
        (3, "1", {}, "3 processes, 1 thread each"),
    ]:
        t0 = time.time()
        per = run(procs, threads, env)
        rows.append({"case": label, "per_map_s": per, "wall_s": time.time() - t0})
        print(json.dumps(rows[-1]), flush=True)
    print("| case | s per map (each process) | mean |\n|---|---|---|")
    for r in rows:
        print(f"| {r['case']} | {', '.join(f'{v:.1f}' for v in r['per_map_s'])} | {sum(r['per_map_s']) / len(r['per_map_s']):.1f} |")
