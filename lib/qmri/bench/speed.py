"""``qmri bench serve --speed``: each task's default method as a user feels it, at 2 mm and 1 mm.

For every task's default method on the sample study (2 mm) and on the same study simulated at 1 mm
(``qmri sample-data --resolution 1``, written once to a cache folder) on a clinical 256 x 256 x 200
matrix (:data:`MATRIX_1MM`):

- **in-process**: ``qmri infer``'s code (read, validate, run, write the maps) in a fresh process:
  the first call (weights loaded, caches cold) and the median of ``repeats`` warm calls; the
  process's peak resident memory; on CUDA its peak device memory;
- **over REST**: the app started as ``make serve`` does, ``POST /infer/<task>`` answered with the
  maps file: the first request and the median of ``repeats`` warm ones; the server's peak resident
  memory (its process tree, sampled every 0.1 s) over the task's requests.

The REST overhead is the warm REST median over the warm in-process median, minus 1. Writes
``bench_speed.md`` and ``.json``.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from ..paths import model_dir as shipped_model_dir

log = logging.getLogger(__name__)

#: (task, sample study id): the default method of each task runs on it.
CASES = (
    ("qsm", "sub-1000_qsm"),
    ("qsm_raw", "sub-1000_qsmraw"),
    ("oef", "sub-1000_oef"),
    ("pvc", "sub-1000_pet"),
    ("synthetic_ct", "sub-1000_t2w"),
    ("synthetic_mr", "sub-1000_ct"),
)

REPO = Path(__file__).resolve().parents[3]
SAMPLE_STUDIES = REPO / "sample-data" / "studies"

#: Run in a fresh process: prints one JSON line (first, warm times, peak RSS, device memory).
_CHILD = r"""
import json, resource, sys, time, statistics
from pathlib import Path
from qmri.networks import compute
task, image, out, repeats, device = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5]
d = compute.use(device)
from qmri.infer_cli import infer
import torch
t = time.perf_counter()
try:
    infer(task, image, out, overwrite=True)
except ValueError as e:  # refused (the server's 422): reported as such
    print(json.dumps({"refused": str(e), "device": str(d), "threads": torch.get_num_threads()})); sys.exit(0)
first = time.perf_counter() - t
if d.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
warm = []
for _ in range(repeats):
    t = time.perf_counter(); path, res = infer(task, image, out, overwrite=True); warm.append(time.perf_counter() - t)
print(json.dumps({"first_s": first, "warm_s": warm, "method": res["method"], "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
                  "device": str(d), "device_peak_mb": torch.cuda.max_memory_allocated(d) / 2**20 if d.type == "cuda" else None, "threads": torch.get_num_threads()}))
"""


def studies_1mm(cache: Path) -> Path:
    """The sample studies simulated at 1 mm (one subject, the sample seed), written once."""
    done = cache / "studies" / ".complete"
    if not done.exists():
        from ..simulate.sample_data import write_task_studies

        log.info("simulating the 1 mm sample studies into %s (once)", cache)
        write_task_studies(str(cache), seed=1000, resolution_mm=1.0)
        done.touch()
    return cache / "studies"


#: The 1 mm rows run on this matrix (a clinical 1 mm acquisition): the 1 mm studies are zero-padded
#: (CT: air, -1024 HU) or cropped about their centre to it.
MATRIX_1MM = (256, 256, 200)


def studies_1mm_matrix(cache: Path) -> Path:
    """The 1 mm studies on :data:`MATRIX_1MM` (written once beside them), affines shifted to match."""
    import nibabel as nib

    src, out = studies_1mm(cache), cache / "studies_256x256x200"
    if (out / ".complete").exists():
        return out
    out.mkdir(parents=True, exist_ok=True)
    for f in sorted(src.glob("sub-1000_*.nii.gz")):
        img = nib.load(str(f))
        data = np.asarray(img.dataobj, np.float32)
        fill = -1024.0 if f.name.endswith("_ct.nii.gz") else 0.0
        new = np.full(MATRIX_1MM + data.shape[3:], fill, np.float32)
        src_sl, dst_sl, shift = [], [], []
        for n, m in zip(data.shape[:3], MATRIX_1MM):
            if n <= m:
                a = (m - n) // 2
                src_sl.append(slice(0, n)), dst_sl.append(slice(a, a + n)), shift.append(-a)
            else:
                a = (n - m) // 2
                src_sl.append(slice(a, a + m)), dst_sl.append(slice(0, m)), shift.append(a)
        new[tuple(dst_sl)] = data[tuple(src_sl)]
        aff = img.affine.copy()
        aff[:3, 3] = img.affine[:3, :3] @ np.array(shift, float) + img.affine[:3, 3]
        nib.save(nib.Nifti1Image(new, aff), str(out / f.name))
        side = f.with_name(f.name[: -len(".nii.gz")] + ".json")
        if side.exists():
            shutil.copy(side, out / side.name)
    (out / ".complete").touch()
    return out


def _shape(path: Path) -> str:
    import nibabel as nib

    return " x ".join(str(s) for s in nib.load(str(path)).shape[:3])


def in_process(task: str, image: Path, repeats: int, device: str, out: Path) -> dict:
    r = subprocess.run([sys.executable, "-c", _CHILD, task, str(image), str(out), str(repeats), device], capture_output=True, text=True, timeout=3600)
    if r.returncode != 0:
        raise RuntimeError(f"{task} on {image.name}: {r.stderr[-2000:]}")
    return json.loads(r.stdout.strip().splitlines()[-1])


class _PeakRSS:
    """Peak resident memory (MB) of a process and its children, sampled in a thread."""

    def __init__(self, pid: int, every_s: float = 0.1):
        import psutil

        self.proc, self.every_s, self.peak = psutil.Process(pid), every_s, 0.0
        self._stop = threading.Event()
        self._t = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        import psutil

        while not self._stop.is_set():
            try:
                rss = sum(p.memory_info().rss for p in [self.proc, *self.proc.children(recursive=True)])
                self.peak = max(self.peak, rss / 2**20)
            except psutil.Error:
                pass
            time.sleep(self.every_s)

    def __enter__(self):
        self._t.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._t.join()


def over_rest(url: str, pid: int, task: str, image_id: str, repeats: int) -> dict:
    import requests

    def one() -> float | str:
        t = time.perf_counter()
        r = requests.post(f"{url}/infer/{task}", params={"image": image_id, "output": "image"}, data={"params": "{}"}, timeout=3600)
        if 400 <= r.status_code < 500:
            return f"{r.status_code}: {r.json().get('detail', r.text)[:200]}"
        if r.status_code != 200:
            raise RuntimeError(f"POST /infer/{task} {image_id}: {r.status_code} {r.text[:300]}")
        return time.perf_counter() - t

    with _PeakRSS(pid) as mem:
        first = one()
        if isinstance(first, str):
            return {"refused": first, "server_peak_rss_mb": mem.peak}
        warm = [one() for _ in range(repeats)]
    return {"first_s": first, "warm_s": warm, "server_peak_rss_mb": mem.peak}


def run(out_dir: str | Path = "bench-results", repeats: int = 5, resolutions=(2.0, 1.0), device: str = "auto", rest: bool = True, tasks=None, cache: str | Path | None = None) -> dict:
    """Measure every case (see the module docstring); returns and writes the rows."""
    from ..networks import compute
    from .serve import start_server, stop_server

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cache = Path(cache) if cache else Path.home() / ".cache" / "qmri" / "studies_1mm"
    folders = {res: SAMPLE_STUDIES if res == 2.0 else studies_1mm_matrix(cache) for res in resolutions}
    cases = [(t, s) for t, s in CASES if tasks is None or t in tasks]
    rows = []
    with tempfile.TemporaryDirectory(prefix="qmri_bench_speed_") as tmp:
        tmp = Path(tmp)
        studies = tmp / "studies"
        shutil.copytree(SAMPLE_STUDIES, studies)
        for res, folder in folders.items():  # every resolution's studies in one datastore
            if res == 2.0:
                continue
            for task, sid in cases:
                for suffix in (".nii.gz", ".json"):
                    src = folder / f"{sid}{suffix}"
                    if src.exists():
                        shutil.copy(src, studies / f"{sid}_{res:g}mm{suffix}")
        for res, folder in folders.items():
            for task, sid in cases:
                image = folder / f"{sid}.nii.gz"
                log.info("in-process: %s at %g mm (%s)", task, res, _shape(image))
                r = in_process(task, image, repeats, device, tmp / "out")
                row = {"task": task, "resolution_mm": res, "shape": _shape(image), "study": sid if res == 2.0 else f"{sid}_{res:g}mm", "device": r["device"], "threads": r["threads"]}
                if "refused" in r:
                    row.update({"method": "default", "refused": r["refused"]})
                else:
                    row.update({"method": r["method"], "peak_rss_mb": r["peak_rss_mb"], "device_peak_mb": r["device_peak_mb"], "inproc_first_s": r["first_s"], "inproc_warm_s": float(np.median(r["warm_s"]))})
                rows.append(row)
        if rest:
            model = tmp / "model"
            shutil.copytree(shipped_model_dir(), model)
            proc, url = start_server(studies, model, tmp / "server.log", conf={"device": device})
            try:
                for row in rows:
                    log.info("REST: %s at %g mm", row["task"], row["resolution_mm"])
                    r = over_rest(url, proc.pid, row["task"], row["study"], repeats)
                    if "refused" in r:
                        row["rest_refused"] = r["refused"]
                        continue
                    row.update({"rest_first_s": r["first_s"], "rest_warm_s": float(np.median(r["warm_s"])), "server_peak_rss_mb": r["server_peak_rss_mb"]})
                    row["rest_overhead"] = row["rest_warm_s"] / row["inproc_warm_s"] - 1
            finally:
                stop_server(proc)
    # rows of the resolutions not run now are kept from the previous table (one table for both)
    previous = out_dir / "bench_speed.json"
    if previous.exists():
        kept = [r for r in json.loads(previous.read_text()).get("rows", []) if r["resolution_mm"] not in folders or (tasks is not None and r["task"] not in tasks)]
        rows = sorted(kept + rows, key=lambda r: (-r["resolution_mm"], [t for t, _ in CASES].index(r["task"])))
    env = {"cores": compute.cores(), "device": device, "repeats": repeats, "date": time.strftime("%Y-%m-%d")}
    (out_dir / "bench_speed.json").write_text(json.dumps({"env": env, "rows": rows}, indent=1))
    text = markdown(rows, env)
    (out_dir / "bench_speed.md").write_text(text)
    print(text)
    return {"env": env, "rows": rows}


def markdown(rows: list[dict], env: dict) -> str:
    def f(v, nd=1):
        return "" if v is None else f"{v:.{nd}f}"

    out = [
        "# qmri bench serve --speed",
        "",
        f"Each task's default method, in-process (`qmri infer`'s code, fresh process) and over REST (`make serve`'s app): "
        f"first call and median of {env['repeats']} warm calls, seconds; peak resident memory, MB. {env['cores']} CPU cores; device asked: {env['device']}; {env['date']}.",
        "",
        "| task | method | mm | shape | device | threads | in-process first | in-process warm | REST first | REST warm | REST overhead | first / warm (REST) | peak RSS in-process | server peak RSS | device peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "refused" in r:
            why = r["refused"].replace("|", "/")[:160]
            out.append(f"| {r['task']} | default | {r['resolution_mm']:g} | {r['shape']} | {r['device']} | {r['threads']} | refused: {why} | | {r.get('rest_refused', '')[:3]} | | | | | | |")
            continue
        ratio = r["rest_first_s"] / r["rest_warm_s"] if r.get("rest_warm_s") else None
        over = f"{100 * r['rest_overhead']:+.0f} %" if r.get("rest_overhead") is not None else ""
        out.append(
            f"| {r['task']} | {r['method']} | {r['resolution_mm']:g} | {r['shape']} | {r['device']} | {r['threads']} | {f(r['inproc_first_s'])} | {f(r['inproc_warm_s'])} | {f(r.get('rest_first_s'))} | {f(r.get('rest_warm_s'))} | {over} | {f(ratio, 2)} | {f(r['peak_rss_mb'], 0)} | {f(r.get('server_peak_rss_mb'), 0)} | {f(r.get('device_peak_mb'), 0)} |"
        )
    return "\n".join(out) + "\n"
