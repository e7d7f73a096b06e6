#!/usr/bin/env bash
# Run THERE (the device machine), from the repository root, as the `run` command:
#   bash experiments/gpu_session/device.sh STEP...     (carry: [".whl"])
# Steps (each logs to <step>.log and goes on when one fails; the seconds are estimates to check):
#   cuda    the CUDA code paths' tests (tests/test_compute.py)                            ~30 s
#   speed   issue 27: qmri bench serve --speed --no-rest --device cuda, 2 and 1 mm         ~3 min
#           (the 1 mm studies are simulated there first, on 16 cores)
#   oef     issue 24: qmri train oef --model best at scale, stopped by OEF_MINUTES        OEF_MINUTES + data
#   pvc     issue 25: the shipped pvcnet_fwhm recipe trained towards the true activity, half the examples domain-randomised    PVC_MINUTES + data
#           (--target activity), stopped by PVC_MINUTES
#   qsm     issue 25: qmri train qsm --randomised 0.75, stopped by QSM_MINUTES            QSM_MINUTES + data
# What comes back: the device returns at most 8 files of at most 16 MiB from $OUT. So everything is
# written under $WORK and packed after every step into $OUT/results.tgz, split into 15 MiB parts
# when larger (a pvcnet_fwhm checkpoint alone is 19 MB), plus $OUT/steps.log to read at once.
# A step killed by the time limit still leaves the earlier steps' pack. Here:
#   cat <files_at>/results.tgz* | tar xz -C /tmp/gpu_results
# Bring weights into apps/qmri/model only with the model card their training wrote, after the
# bench here says they are better (README.md).
# DRY=1: tiny sizes on the CPU (experiments/gpu_session/dry_run.sh checks this script here).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
WORK=${WORK:-$(mktemp -d)}
mkdir -p "$OUT" "$WORK"
export PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
if ls .whl/*.whl >/dev/null 2>&1; then
    # pure-Python wheels, unpacked (nilearn's is trimmed by prepare.sh, so pip would reject its RECORD)
    python3 -c 'import sys, zipfile; [zipfile.ZipFile(w).extractall("/tmp/site") for w in sys.argv[1:]]' .whl/*.whl || exit 3
    export PYTHONPATH=/tmp/site:$PWD/lib
else
    export PYTHONPATH=$PWD/lib
fi
export QMRI_CACHE=${QMRI_CACHE:-/tmp/qmri_cache}
DEVICE=${DEVICE:-cuda}
qmri() { python3 -m qmri.cli "$@"; }
{ date; nvidia-smi -L 2>/dev/null; python3 -c 'import torch, monai, nibabel, nilearn; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "monai", monai.__version__, "from", nilearn.__file__)'; nproc; } > "$WORK/env.log" 2>&1

if [ "${DRY:-0}" = 1 ]; then
    SPEED_ARGS=(--speed-resolutions 2 --speed-tasks qsm --repeats 1)
    OEF_ARGS=(--train-subjects 1 --val-subjects 1 --draws 1 --epochs 1 --steps 2)
    PVC_ARGS=(--condition-fwhm --train-subjects 1 --val-subjects 1 --epochs 1 --steps 2 --batch 1 --patch 32)
    QSM_ARGS=(--train-subjects 1 --val-subjects 1 --epochs 1 --steps 2)
else
    SPEED_ARGS=(--repeats 3)
    OEF_ARGS=(--train-subjects 48 --val-subjects 8 --draws 16 --epochs 60 --max-minutes "${OEF_MINUTES:-5}" --workers 12)
    PVC_ARGS=(--condition-fwhm --train-subjects 24 --val-subjects 2 --epochs 28 --steps 200 --batch 4 --patch 64 --lr 1e-3 --channels 32,64,128,256 --workers 12 --max-minutes "${PVC_MINUTES:-5}")
    QSM_ARGS=(--train-subjects 48 --epochs 200 --max-minutes "${QSM_MINUTES:-5}")
fi

pack() {
    rm -f "$OUT"/results.tgz*
    tar czf /tmp/results.tgz -C "$WORK" .
    if [ "$(stat -c %s /tmp/results.tgz)" -gt $((15 * 1048576)) ]; then
        split -b 15m -d /tmp/results.tgz "$OUT/results.tgz.part-"
    else
        cp /tmp/results.tgz "$OUT/results.tgz"
    fi
    cp "$WORK/steps.log" "$OUT/steps.log" 2>/dev/null
}

step() {  # name, command...
    local name=$1; shift
    local t0=$(date +%s)
    echo "== $name: $*" | tee -a "$WORK/steps.log"
    "$@" > "$WORK/$name.log" 2>&1
    local rc=$?
    echo "== $name rc=$rc $(( $(date +%s) - t0 )) s" | tee -a "$WORK/steps.log"
    tail -5 "$WORK/$name.log"
    pack
}

for s in "$@"; do
    case $s in
        cuda) step cuda python3 -m pytest -q -p no:cacheprovider tests/test_compute.py ;;
        speed) step speed qmri bench serve --speed --no-rest --device "$DEVICE" "${SPEED_ARGS[@]}" --out "$WORK/speed" ;;
        oef) step oef qmri train oef --model best "${OEF_ARGS[@]}" --device "$DEVICE" --out "$WORK/oefnet" ;;
        pvc) step pvc qmri train pvc --target activity --randomised 0.5 "${PVC_ARGS[@]}" --device "$DEVICE" --out "$WORK/pvcnet_activity/pvcnet_fwhm.pt" ;;
        qsm) step qsm qmri train qsm --randomised 0.75 "${QSM_ARGS[@]}" --device "$DEVICE" --out "$WORK/qsmnet/qsmnet.pt" ;;
        *) echo "unknown step $s" | tee -a "$WORK/steps.log" ;;
    esac
done
ls -la "$OUT"
