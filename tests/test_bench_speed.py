"""`qmri bench serve --speed`'s measuring protocol: the in-process child answers warm calls one at a
time (so they can alternate with REST requests), and the server log gives each request's own task
time (the REST layer is the client's time minus it)."""

from pathlib import Path

from qmri.bench.speed import SAMPLE_STUDIES, ServerLog, measure


def test_server_log_gives_each_requests_task_time_once(tmp_path):
    log = tmp_path / "server.log"
    log.write_text("[MainThread] (main:100) - warm-up finished in 0.3 s\n")
    reader = ServerLog(log)
    assert reader.new_task_seconds() == [0.3]
    assert reader.new_task_seconds() == []  # nothing new
    with open(log, "a") as f:
        f.write("[qmri-infer_0] (lib.infers.quantitative:157) - qsmnet finished in 3.142 s\n[qmri-infer_0] other line\n")
    assert reader.new_task_seconds() == [3.142]
    with open(log, "a") as f:
        f.write("[qmri-infer_0] - best finished in 0.25 s\n[qmri-infer_0] - pvcnet_fwhm finished in 1.5 s\n")
    assert reader.new_task_seconds() == [0.25, 1.5]


def test_in_process_child_times_each_warm_call_and_reports_its_memory(tmp_path):
    r = measure("pvc", Path(SAMPLE_STUDIES) / "sub-1000_pet.nii.gz", "sub-1000_pet", 2, "cpu", tmp_path)
    assert r["method"] == "pvcnet_fwhm" and r["device"] == "cpu"
    assert r["inproc_first_s"] > 0 and len(r["warm_s"]) == 2 and all(0 < s < 120 for s in r["warm_s"])
    assert "rest_first_s" not in r and r["rest_warm"] == []  # no server asked for
    assert 200 < r["peak_rss_mb"] < 8000  # MB: the network, the study and its maps are resident
    assert (tmp_path / "sub-1000_pet_pvc_pvcnet_fwhm.nii.gz").exists()  # the maps were written each time
