"""``qmri bench serve --speed``: each task's default method as a user feels it, at 2 mm and 1 mm.

For every task's default method on the sample study (2 mm) and on the same study simulated at 1 mm
(``qmri sample-data --resolution 1``, written once to a cache folder) on a clinical 256 x 256 x 200
matrix (:data:`MATRIX_1MM`):

- **in-process**: ``qmri infer``'s code (read, validate, run, write the maps) in a fresh process
  with the server's environment (``OMP_WAIT_POLICY=PASSIVE``, one malloc arena: the Makefile's):
  the first call (weights loaded, caches cold) and the median of ``repeats`` warm calls; the
  process's peak resident memory; on CUDA its peak device memory;
- **over REST**: the app started as ``make serve`` does, ``POST /infer/<task>`` answered with the
  maps file: the first request and the median of ``repeats`` warm ones; the server's peak resident
  memory (its process tree, sampled every 0.1 s) over the task's requests.

The warm calls alternate, one in-process then one over REST, so that both see the same state of a
shared machine. The REST overhead is the warm REST median over the warm in-process median, minus 1.
On a shared machine that ratio still carries the drift between two processes (measured on a 2-core
machine: the same warm call drifted between 2.9 and 4.2 s within a minute, in either path), so the
table also gives the **REST layer**: per warm request, the client's wall time minus the task's own
time in the server (``latency_s``, which the app logs), i.e. what HTTP, MONAI Label's request
handling and the file transfer add to the same call, as a fraction of the in-process warm median.
Writes ``bench_speed.md`` and ``.json``.
"""

from __future__ import annotations

import json
import logging
import re
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

#: Run in a fresh process: the first call, then one warm call per "run" line on stdin (one JSON line
#: each), and on "end" its peak memory.
_CHILD = r"""
import json, resource, sys, time
from qmri.networks import compute
task, image, out, device = sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4]
d = compute.use(device)
from qmri.infer_cli import infer
import torch
t = time.perf_counter()
try:
    path, res = infer(task, image, out, overwrite=True)
except ValueError as e:  # refused (the server's 422): reported as such
    print(json.dumps({"refused": str(e), "device": str(d), "threads": torch.get_num_threads()}), flush=True); sys.exit(0)
print(json.dumps({"first_s": time.perf_counter() - t, "method": res["method"], "device": str(d), "threads": torch.get_num_threads()}), flush=True)
if d.type == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats()
for line in sys.stdin:
    if line.strip() != "run":
        break
    t = time.perf_counter(); infer(task, image, out, overwrite=True)
    print(json.dumps({"s": time.perf_counter() - t}), flush=True)
try:  # this process's own peak (ru_maxrss would keep the parent's peak across fork + exec on Linux)
    peak = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) / 1024
except (OSError, StopIteration):
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
print(json.dumps({"peak_rss_mb": peak,
                  "device_peak_mb": torch.cuda.max_memory_allocated(d) / 2**20 if d.type == "cuda" else None}), flush=True)
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


class InProcess:
    """``task`` on ``image`` in a fresh process with the server's environment (see the module doc):
    ``first`` is its first call (or ``{"refused": ...}``), :meth:`warm` times one more call,
    :meth:`end` returns its peak memory."""

    def __init__(self, task: str, image: Path, device: str, out: Path):
        from .serve import server_env

        self.stderr = tempfile.TemporaryFile("w+")  # a file, not a pipe: a chatty child never blocks on it
        self.proc = subprocess.Popen([sys.executable, "-c", _CHILD, task, str(image), str(out), device], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=server_env())
        self.task, self.image = task, image
        try:
            self.first = self._answer()
        except BaseException:
            self.close()
            raise

    def _answer(self) -> dict:
        line = self.proc.stdout.readline()
        if not line:
            self.proc.wait(timeout=60)
            self.stderr.seek(0)
            raise RuntimeError(f"{self.task} on {self.image.name}: {self.stderr.read()[-2000:]}")
        return json.loads(line)

    def close(self) -> None:
        """Stop the child if it still runs (after an error) and drop its stderr file."""
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=60)
        self.stderr.close()

    def warm(self) -> float:
        self.proc.stdin.write("run\n")
        self.proc.stdin.flush()
        return self._answer()["s"]

    def end(self) -> dict:
        if "refused" in self.first:
            self.proc.wait(timeout=60)
            return {}
        self.proc.stdin.write("end\n")
        self.proc.stdin.flush()
        r = self._answer()
        self.proc.stdin.close()
        self.proc.wait(timeout=60)
        return r


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


def rest_call(url: str, task: str, image_id: str) -> float | str:
    """Seconds of one ``POST /infer/<task>`` answered with the maps file, or the refusal's text (4xx)."""
    import requests

    t = time.perf_counter()
    r = requests.post(f"{url}/infer/{task}", params={"image": image_id, "output": "image"}, data={"params": "{}"}, timeout=3600)
    if 400 <= r.status_code < 500:
        return f"{r.status_code}: {r.json().get('detail', r.text)[:200]}"
    if r.status_code != 200:
        raise RuntimeError(f"POST /infer/{task} {image_id}: {r.status_code} {r.text[:300]}")
    return time.perf_counter() - t


_TASK_SECONDS = re.compile(r" finished in ([0-9.]+) s")  # the app's log line of a request's task time


class ServerLog:
    """The task time [s] of each request answered since the last call, from the server's log file."""

    def __init__(self, path: Path):
        self.path, self.offset = Path(path), 0

    def new_task_seconds(self) -> list[float]:
        with open(self.path, "rb") as f:
            f.seek(self.offset)
            text = f.read().decode("utf-8", "replace")
            self.offset = f.tell()
        return [float(x) for x in _TASK_SECONDS.findall(text)]


def measure(task: str, image: Path, study: str, repeats: int, device: str, out: Path, url: str | None = None, server_pid: int | None = None, server_log: ServerLog | None = None) -> dict:
    """One case: the in-process first call, then (with a server at ``url``) its first request, then
    ``repeats`` warm calls alternating in-process and REST (see the module doc), with the REST
    layer of each warm request where ``server_log`` reads the task's own time."""
    child = InProcess(task, image, device, out)
    try:
        return _measure(child, task, study, repeats, url, server_pid, server_log)
    finally:
        child.close()


def _measure(child: InProcess, task: str, study: str, repeats: int, url: str | None, server_pid: int | None, server_log: ServerLog | None) -> dict:
    r = dict(child.first)
    if "refused" in r:
        if url is not None:
            rest = rest_call(url, task, study)
            r["rest_refused"] = rest if isinstance(rest, str) else "answered (not refused)"
        child.end()
        return r
    r.update({"inproc_first_s": r.pop("first_s"), "warm_s": [], "rest_warm": [], "rest_layer": []})
    if url is not None:
        with _PeakRSS(server_pid) as mem:
            first = rest_call(url, task, study)
            if isinstance(first, str):
                r["rest_refused"] = first
            else:
                r["rest_first_s"] = first
                if server_log is not None:
                    server_log.new_task_seconds()
                for _ in range(repeats):
                    r["warm_s"].append(child.warm())
                    r["rest_warm"].append(rest_call(url, task, study))
                    inside = server_log.new_task_seconds() if server_log is not None else []
                    if len(inside) == 1:  # this request's own task time
                        r["rest_layer"].append(r["rest_warm"][-1] - inside[0])
        r["server_peak_rss_mb"] = mem.peak
    if not r["warm_s"]:  # no server, or it refused: in-process warm calls only
        r["warm_s"] = [child.warm() for _ in range(repeats)]
    r.update(child.end())
    return r


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
        proc = url = server_log = None
        if rest:
            model = tmp / "model"
            shutil.copytree(shipped_model_dir(), model)
            proc, url = start_server(studies, model, tmp / "server.log", conf={"device": device})
            server_log = ServerLog(tmp / "server.log")
        try:
            for res, folder in folders.items():
                for task, sid in cases:
                    image = folder / f"{sid}.nii.gz"
                    study = sid if res == 2.0 else f"{sid}_{res:g}mm"
                    log.info("%s at %g mm (%s)", task, res, _shape(image))
                    r = measure(task, image, study, repeats, device, tmp / "out", url, None if proc is None else proc.pid, server_log)
                    row = {"task": task, "resolution_mm": res, "shape": _shape(image), "study": study, "device": r["device"], "threads": r["threads"]}
                    if "refused" in r:
                        row.update({"method": "default", "refused": r["refused"]})
                        if "rest_refused" in r:
                            row["rest_refused"] = r["rest_refused"]
                        rows.append(row)
                        continue
                    row.update({"method": r["method"], "peak_rss_mb": r["peak_rss_mb"], "device_peak_mb": r["device_peak_mb"], "inproc_first_s": r["inproc_first_s"], "inproc_warm_s": float(np.median(r["warm_s"]))})
                    if "rest_refused" in r:
                        row["rest_refused"] = r["rest_refused"]
                    elif "rest_first_s" in r:
                        row.update({"rest_first_s": r["rest_first_s"], "rest_warm_s": float(np.median(r["rest_warm"])), "server_peak_rss_mb": r["server_peak_rss_mb"]})
                        row["rest_overhead"] = row["rest_warm_s"] / row["inproc_warm_s"] - 1
                        if r["rest_layer"]:
                            row["rest_layer_s"] = float(np.median(r["rest_layer"]))
                            row["rest_layer"] = row["rest_layer_s"] / row["inproc_warm_s"]
                    rows.append(row)
        finally:
            if proc is not None:
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
        "Warm calls alternate in-process and REST. REST layer: median over the warm requests of the client's time minus the task's own time in the server (HTTP, request handling, file transfer), and that as a share of the in-process warm median.",
        "",
        "| task | method | mm | shape | device | threads | in-process first | in-process warm | REST first | REST warm | REST overhead | REST layer | first / warm (REST) | peak RSS in-process | server peak RSS | device peak MB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        if "refused" in r:
            why = r["refused"].replace("|", "/")[:160]
            out.append(f"| {r['task']} | default | {r['resolution_mm']:g} | {r['shape']} | {r['device']} | {r['threads']} | refused: {why} | | {r.get('rest_refused', '')[:3]} | | | | | | | |")
            continue
        ratio = r["rest_first_s"] / r["rest_warm_s"] if r.get("rest_warm_s") else None
        over = f"{100 * r['rest_overhead']:+.0f} %" if r.get("rest_overhead") is not None else ""
        layer = f"{r['rest_layer_s']:.2f} s ({100 * r['rest_layer']:.1f} %)" if r.get("rest_layer") is not None else ""
        out.append(
            f"| {r['task']} | {r['method']} | {r['resolution_mm']:g} | {r['shape']} | {r['device']} | {r['threads']} | {f(r['inproc_first_s'])} | {f(r['inproc_warm_s'])} | {f(r.get('rest_first_s'))} | {f(r.get('rest_warm_s'))} | {over} | {layer} | {f(ratio, 2)} | {f(r['peak_rss_mb'], 0)} | {f(r.get('server_peak_rss_mb'), 0)} | {f(r.get('device_peak_mb'), 0)} |"
        )
    return "\n".join(out) + "\n"
