"""``qmri bench serve``: the server as a client meets it, under hostile input and under load.

Starts the app (``make serve``'s command) on a private copy of the sample studies and the shipped
weights, then:

- ``--bad-inputs``: sends every request of :mod:`qmri.bench.hostile_requests` and tabulates the
  answer (status, message) beside the expected one, and whether any file changed (sha256 of the
  studies and the served weights before and after);
- ``--concurrency N``: sends N parallel ``qsm`` inferences (closed-form L2, the fastest method) while
  ``/info`` is polled, and reports latency percentiles of both, the status counts and throughput.

Writes ``bench_serve.md`` and ``.json`` to the output folder.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from ..paths import model_dir as shipped_model_dir

log = logging.getLogger(__name__)

REPO = Path(__file__).resolve().parents[3]
APP = REPO / "apps" / "qmri"
SAMPLE_STUDIES = REPO / "sample-data" / "studies"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def server_env() -> dict:
    """The environment ``make serve`` gives the server (the Makefile's thread and malloc settings,
    unless the caller's environment sets them)."""
    return {"OMP_WAIT_POLICY": "PASSIVE", "MALLOC_ARENA_MAX": "1", **os.environ}


def start_server(studies: Path, model_dir: Path, log_path: Path, env: dict | None = None, conf: dict | None = None, timeout_s: float = 180):
    """Start the guarded app (``make serve``'s command) on ``studies`` serving ``model_dir``, with
    extra environment variables and app ``--conf`` settings; returns (process, base URL) once
    ``/info`` answers."""
    import requests

    port = _free_port()
    env = {**server_env(), "PYTHONPATH": str(APP), **(env or {})}
    cmd = [sys.executable, "-m", "monailabel.main", "start_server", "--app", str(APP), "--studies", str(studies), "--host", "127.0.0.1", "--port", str(port), "--conf", "model_dir", str(model_dir), "--uvicorn_app", "lib.server.asgi:app"]
    for key, value in (conf or {}).items():
        cmd += ["--conf", key, value]
    with open(log_path, "w") as out:
        proc = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=REPO)
    url = f"http://127.0.0.1:{port}"
    deadline = time.time() + timeout_s
    while time.time() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode}: {Path(log_path).read_text()[-3000:]}")
        try:
            if requests.get(f"{url}/info/", timeout=2).ok:
                return proc, url
        except requests.ConnectionError:
            pass
        time.sleep(1)
    proc.kill()
    raise RuntimeError(f"server did not answer /info within {timeout_s:.0f} s")


def stop_server(proc) -> None:
    proc.terminate()
    try:
        proc.wait(timeout=20)
    except subprocess.TimeoutExpired:
        proc.kill()


def _sha(*roots: Path) -> dict:
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for r in roots for p in sorted(Path(r).rglob("*")) if p.is_file()}


def answer_detail(r) -> str:
    """An answer's ``detail`` (FastAPI's error field), else its text."""
    try:
        return str(r.json().get("detail", r.text))
    except ValueError:
        return r.text


def bad_inputs(url: str, studies: Path, roots: tuple[Path, ...]) -> list[dict]:
    from . import hostile_requests as hc

    hc.setup_studies(url, studies)
    time.sleep(1.0)
    rows = []
    before = _sha(*roots)
    for case in hc.cases(studies):
        t = time.time()
        r = case.send(url)
        detail = answer_detail(r)
        expected = case.status if isinstance(case.status, tuple) else (case.status,)
        rows.append(
            {
                "case": case.name,
                "expected": list(expected),
                "status": r.status_code,
                "seconds": round(time.time() - t, 3),
                "ok": r.status_code in expected and case.says in detail.lower(),
                "message": detail[:160],
            }
        )
    unchanged = _sha(*roots) == before
    for row in rows:
        row["files_unchanged"] = unchanged
    return rows


def load(url: str, n: int) -> dict:
    """``n`` parallel qsm (L2) inferences while /info is polled every 0.2 s."""
    import requests

    def one(_):
        t = time.time()
        r = requests.post(f"{url}/infer/qsm", params={"image": "sub-1000_qsm", "output": "json"}, data={"params": json.dumps({"method": "l2"})}, timeout=900)
        return r.status_code, time.time() - t

    info_s, stop = [], threading.Event()

    def poll():
        while not stop.is_set():
            t = time.time()
            requests.get(f"{url}/info/", timeout=30)
            info_s.append(time.time() - t)
            time.sleep(0.2)

    one(0)  # warm-up: the first request loads what the method needs
    poller = threading.Thread(target=poll)
    poller.start()
    t0 = time.time()
    with ThreadPoolExecutor(n) as ex:
        answers = list(ex.map(one, range(n)))
    wall = time.time() - t0
    stop.set()
    poller.join()
    lat = np.array([s for _, s in answers])
    statuses: dict[str, int] = {}
    for code, _ in answers:
        statuses[str(code)] = statuses.get(str(code), 0) + 1

    def pct(a):
        return {f"p{q}": round(float(np.percentile(a, q)), 3) for q in (50, 90, 99)} | {"max": round(float(np.max(a)), 3)}

    return {"requests": n, "statuses": statuses, "wall_s": round(wall, 2), "throughput_per_s": round(n / wall, 2), "infer_latency_s": pct(lat), "info_latency_s": pct(np.array(info_s)), "info_polls": len(info_s)}


def markdown(rows: list[dict] | None, loadres: dict | None, env: dict) -> str:
    out = ["# qmri bench serve", "", f"Server: `make serve`'s command on a copy of the sample studies; limits {json.dumps(env)}; {os.cpu_count()} CPU cores.", ""]
    if rows is not None:
        ok = sum(r["ok"] for r in rows)
        out += [f"## Bad-input catalogue: {ok}/{len(rows)} answered as expected; files unchanged: {rows[0]['files_unchanged'] if rows else 'n/a'}", "", "| case | expected | status | ok | message |", "|---|---|---|---|---|"]
        out += [f"| {r['case']} | {'/'.join(map(str, r['expected']))} | {r['status']} | {'yes' if r['ok'] else '**no**'} | {r['message'].replace('|', '/')} |" for r in rows]
        out.append("")
    if loadres is not None:
        il, fl = loadres["infer_latency_s"], loadres["info_latency_s"]
        out += [
            f"## Load: {loadres['requests']} parallel qsm (L2) inferences",
            "",
            "| what | p50 (s) | p90 (s) | p99 (s) | max (s) |",
            "|---|---|---|---|---|",
            f"| infer (queued + computed) | {il['p50']} | {il['p90']} | {il['p99']} | {il['max']} |",
            f"| /info meanwhile ({loadres['info_polls']} polls) | {fl['p50']} | {fl['p90']} | {fl['p99']} | {fl['max']} |",
            "",
            f"Statuses {loadres['statuses']}; wall {loadres['wall_s']} s; {loadres['throughput_per_s']} maps/s.",
            "",
        ]
    return "\n".join(out)


def run(out_dir: str | Path = "bench-results", bad: bool = True, concurrency: int = 16) -> dict:
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    env = {"QMRI_INFER_QUEUE": str(max(8, concurrency))}
    with tempfile.TemporaryDirectory(prefix="qmri_bench_serve_") as tmp:
        tmp = Path(tmp)
        shutil.copytree(SAMPLE_STUDIES, tmp / "studies")
        shutil.copytree(shipped_model_dir(), tmp / "model")
        proc, url = start_server(tmp / "studies", tmp / "model", tmp / "server.log", env=env)
        try:
            rows = bad_inputs(url, tmp / "studies", (tmp / "studies", tmp / "model", APP / "lib")) if bad else None
            loadres = load(url, concurrency) if concurrency else None
        finally:
            stop_server(proc)
    text = markdown(rows, loadres, env)
    print(text)
    (out_dir / "bench_serve.md").write_text(text)
    result = {"bad_inputs": rows, "load": loadres, "env": env}
    (out_dir / "bench_serve.json").write_text(json.dumps(result, indent=2))
    return result
