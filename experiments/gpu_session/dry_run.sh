#!/usr/bin/env bash
# Check device.sh HERE, on the CPU with tiny sizes, in an environment that, like the device image,
# cannot import the server stack (monailabel, fastapi, SimpleITK, highdicom, ...):
#   bash experiments/gpu_session/dry_run.sh [STEP...]      (default: cuda speed oef pvc qsm)
#   WHEELS=1 bash ...   unpack and use the .whl/ wheels as the device does (else .venv's packages)
set -uo pipefail
cd "$(git rev-parse --show-toplevel)"
tmp=$(mktemp -d)
cat > "$tmp/sitecustomize.py" <<'PY'
import importlib.abc, sys
ABSENT = {"monailabel", "fastapi", "starlette", "uvicorn", "pydantic", "SimpleITK", "itk", "highdicom", "mlflow", "ignite", "pillow_jpls", "bids_validator", "bidsschematools", "requests_toolbelt", "qsm_forward"}
class Absent(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in ABSENT:
            raise ImportError(f"{name} is not on the device image (dry run)")
sys.meta_path.insert(0, Absent())
PY
mkdir -p "$tmp/bin"
printf '#!/bin/sh\nexport PYTHONPATH="%s:${PYTHONPATH:-}"\nexec %s "$@"\n' "$tmp" "$PWD/.venv/bin/python" > "$tmp/bin/python3"
chmod +x "$tmp/bin/python3"
[ "${WHEELS:-0}" = 1 ] || mv .whl .whl.dry 2>/dev/null  # .venv has the packages
steps=("$@")
[ ${#steps[@]} -eq 0 ] && steps=(cuda speed oef pvc qsm)
PATH="$tmp/bin:$PATH" DRY=1 DEVICE=cpu OUT=$tmp/out bash experiments/gpu_session/device.sh "${steps[@]}"
rc=$?
mv .whl.dry .whl 2>/dev/null
echo "dry run outputs in $tmp/out"
ls "$tmp/out"
mkdir -p "$tmp/unpacked" && cat "$tmp"/out/results.tgz* | tar xz -C "$tmp/unpacked" && ls "$tmp/unpacked"
grep -h "rc=" "$tmp/out/steps.log"
exit $rc
