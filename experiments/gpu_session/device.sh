#!/usr/bin/env bash
# Run THERE (the device machine), from the repository root, as the `run` command:
#   bash experiments/gpu_session/device.sh STEP...     (carry: [".whl"])
# Steps (each logs to $OUT/<step>.log and goes on when one fails; seconds are estimates to check):
#   cuda    the CUDA code paths' tests (tests/test_compute.py)                           ~30 s
#   speed   issue 27: qmri bench serve --speed --no-rest --device cuda, 2 and 1 mm        ~3 min
#           (the 1 mm studies are simulated there first, on 16 cores)
#   oef     issue 24: qmri train oef --model best at scale, stopped by OEF_MINUTES       OEF_MINUTES + data
#   qsm     issue 25: qmri train qsm --randomised 0.75, stopped by QSM_MINUTES           QSM_MINUTES + data
# Weights come back under $OUT (each < 16 MiB); bring them into apps/qmri/model only through the
# training command's own model card (copy metadata.json and the curve with them).
# DRY=1: tiny sizes on the CPU (experiments/gpu_session/dry_run.sh checks this script here).
set -uo pipefail
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
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
{ date; nvidia-smi -L 2>/dev/null; python3 -c 'import torch, monai, nibabel, nilearn; print("torch", torch.__version__, "cuda", torch.cuda.is_available(), "monai", monai.__version__, "from", nilearn.__file__)'; nproc; } > "$OUT/env.log" 2>&1

if [ "${DRY:-0}" = 1 ]; then
    SPEED_ARGS=(--speed-resolutions 2 --speed-tasks qsm --repeats 1)
    OEF_ARGS=(--train-subjects 1 --val-subjects 1 --draws 1 --epochs 1 --steps 2)
    QSM_ARGS=(--train-subjects 1 --val-subjects 1 --epochs 1 --steps 2)
else
    SPEED_ARGS=(--repeats 3)
    OEF_ARGS=(--train-subjects 48 --draws 16 --epochs 60 --max-minutes "${OEF_MINUTES:-5}" --workers 12)
    QSM_ARGS=(--train-subjects 48 --epochs 200 --max-minutes "${QSM_MINUTES:-5}")
fi

step() {  # name, command...
    local name=$1; shift
    local t0=$(date +%s)
    echo "== $name: $*" | tee -a "$OUT/steps.log"
    "$@" > "$OUT/$name.log" 2>&1
    local rc=$?
    echo "== $name rc=$rc $(( $(date +%s) - t0 )) s" | tee -a "$OUT/steps.log"
    tail -5 "$OUT/$name.log"
}

for s in "$@"; do
    case $s in
        cuda) step cuda python3 -m pytest -q -p no:cacheprovider tests/test_compute.py ;;
        speed) step speed qmri bench serve --speed --no-rest --device "$DEVICE" "${SPEED_ARGS[@]}" --out "$OUT" ;;
        oef) step oef qmri train oef --model best "${OEF_ARGS[@]}" --device "$DEVICE" --out "$OUT/oefnet" ;;
        qsm) step qsm qmri train qsm --randomised 0.75 "${QSM_ARGS[@]}" --device "$DEVICE" --out "$OUT/qsmnet/qsmnet.pt" ;;
        *) echo "unknown step $s" ;;
    esac
done
ls -la "$OUT" "$OUT"/* 2>/dev/null | head -40
