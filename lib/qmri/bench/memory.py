"""``qmri bench memory``: peak memory of every task and method per input voxel.

Each (task, method) runs once on its sample study in a fresh process; the growth of the process's
peak resident memory from just before the call (data loaded) to just after it, divided by the
number of voxels of the input grid (its first three dimensions; a 4D input's channels are part of
the cost per voxel), is the method's *bytes per voxel*. Per voxel rather than per value, so that a
task whose inputs may have fewer channels (3D PET for the PET-only methods) is not underestimated.
The server's memory admission (:attr:`qmri.tasks.spec.TaskSpec.bytes_per_voxel`) uses the largest
of a task's methods, rounded up, to refuse inputs that would not fit before any work starts. The
figures include the network weights loaded on first use and the threads' working buffers of this
machine's torch build.
"""

from __future__ import annotations

import json
import resource
import subprocess
import sys
from pathlib import Path

import numpy as np

#: (task, sample study, method) measured; every method of every task.
RUNS = (
    [("qsm", "sub-1000_qsm", m) for m in ("qsmnet", "qsmnet_direct", "l2", "tkd", "tv", "cg")]
    + [("qsm_raw", "sub-1000_qsmraw", m) for m in ("qsmnet", "tkd")]
    + [("oef", "sub-1000_oef", m) for m in ("best", "cnn3d", "lstm", "qq_fit")]
    + [("pvc", "sub-1000_pet", m) for m in ("pvcnet_fwhm", "pvcnet", "rbv", "iterative_yang", "gtm", "muller_gartner", "richardson_lucy", "van_cittert", "sharpen")]
    + [("synthetic_ct", "sub-1000_t2w", m) for m in ("sccyclegan", "bulk_density", "tissue_mixture")]
    + [("synthetic_mr", "sub-1000_ct", m) for m in ("sccyclegan", "bulk_density")]
)

STUDIES = Path(__file__).resolve().parents[3] / "sample-data" / "studies"


def task_specs() -> dict:
    """Every task's spec with the shipped weights (as the app builds them)."""
    from ..models import shipped
    from ..tasks.oef import NETWORKS, oef_spec
    from ..tasks.pvc import pvc_spec
    from ..tasks.qsm import qsm_specs
    from ..tasks.synthesis import synthesis_specs

    qsm, raw = qsm_specs(shipped("qsmnet"))
    sct, smr = synthesis_specs(shipped("synthnet"))
    oef = oef_spec({k: shipped("oefnet") / f"{k}.pt" for k in NETWORKS})
    pvc = pvc_spec({k: shipped(k) for k in ("pvcnet_fwhm", "pvcnet")})
    return {s.name: s for s in (qsm, raw, oef, pvc, sct, smr)}


def measure_one(task: str, study: str, method: str, threads: int = 2) -> dict:
    """In this process: peak RSS growth of one run, per input value (call in a fresh process)."""
    import torch

    from ..io.nifti_input import load_input_volume
    from ..io.study import read_sidecar

    torch.set_num_threads(threads)
    spec = task_specs()[task]
    path = STUDIES / f"{study}.nii.gz"
    data, affine = load_input_volume(path)
    meta = read_sidecar(path)
    before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux
    spec.run(data, affine, meta, method)
    after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    voxels = int(np.prod(data.shape[:3]))
    return {"task": task, "method": method, "shape": list(data.shape), "peak_growth_mb": round((after - before) / 1024, 1), "bytes_per_voxel": round((after - before) * 1024 / voxels, 1)}


def run(out_dir: str | Path = "bench-results") -> list[dict]:
    rows = []
    for i, (task, study, method) in enumerate(RUNS, 1):
        r = subprocess.run([sys.executable, "-m", "qmri.bench.memory", task, study, method], capture_output=True, text=True, timeout=1800)
        if r.returncode != 0:
            raise RuntimeError(f"{task}/{method} failed: {r.stderr[-800:]}")
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
        print(f"[{i}/{len(RUNS)}] {task} {method}: {rows[-1]['bytes_per_voxel']} B/voxel", flush=True)
    worst: dict[str, float] = {}
    for row in rows:
        worst[row["task"]] = max(worst.get(row["task"], 0.0), row["bytes_per_voxel"])
    lines = [
        "# qmri bench memory",
        "",
        "Peak resident memory growth of one run on the 2 mm sample study, per voxel of the input grid (4D: channels included in the cost); 2 torch threads.",
        "",
        "| task | method | input shape | peak growth (MB) | bytes per voxel |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['task']} | {r['method']} | {' x '.join(map(str, r['shape']))} | {r['peak_growth_mb']} | {r['bytes_per_voxel']} |" for r in rows]
    lines += ["", "| task | largest bytes per voxel |", "|---|---|"] + [f"| {t} | {v} |" for t, v in worst.items()]
    text = "\n".join(lines) + "\n"
    print(text)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "bench_memory.md").write_text(text)
    (out / "bench_memory.json").write_text(json.dumps({"rows": rows, "largest_bytes_per_voxel": worst}, indent=2))
    return rows


if __name__ == "__main__":
    print(json.dumps(measure_one(*sys.argv[1:4])))
