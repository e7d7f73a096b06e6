#!/usr/bin/env bash
# Run HERE (the development machine), in the repository root, before a device `run`:
#   bash experiments/gpu_session/prepare.sh          # wheels into .whl/, big files out of what travels
#   bash experiments/gpu_session/prepare.sh train    # the same, and no weights or studies (training only)
#   bash experiments/gpu_session/prepare.sh restore  # after the device runs: the index as it was
#
# Why: the device tool sends the tracked + untracked-not-ignored files, at most 64 MiB, and the
# repository holds ~95 MiB (weights 56, sample data 35). The device image has torch, numpy, scipy,
# scikit-learn, scikit-image, pandas, matplotlib, tqdm and pytest, but not monai, nibabel, nilearn
# (which carries the MNI152 maps the phantoms are made from) or pydicom: those travel as wheels
# (all pure Python, so the Python 3.11 here downloads what the device's 3.12 installs).
#
# "Out of what travels" = `git rm --cached` (the files stay on disk) + an entry in
# .git/info/exclude; `restore` undoes both (`git reset` of those paths), so nothing is committed
# deleted. Never commit between prepare and restore.
set -euo pipefail
cd "$(git rev-parse --show-toplevel)"
LIST=.gpu_slim_list
EXCL=.git/info/exclude
mkdir -p .git/info && touch "$EXCL"

if [ "${1:-}" = "restore" ]; then
    if [ -f "$LIST" ]; then
        xargs -a "$LIST" git reset -q --
        rm -f "$LIST"
    fi
    sed -i '/^# gpu_session slim begin$/,/^# gpu_session slim end$/d' "$EXCL"
    git status --short | head
    echo "restored: the index is as HEAD for the slimmed paths"
    exit 0
fi

# 1. wheels, versions from the lock (pure Python: the platform flags only satisfy pip)
grep -qx '/.whl/' "$EXCL" || echo '/.whl/' >> "$EXCL"
pins=$(grep -iE '^(monai|nibabel|nilearn|pydicom)==' requirements.lock | tr '\n' ' ')
python3 -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
    --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
    -d .whl $pins
# nilearn without its HTML-viewer scripts, surface meshes and tests (11.5 -> 6.3 MiB): the phantoms
# need only its MNI152 volumes; device.sh unpacks the wheels (pure Python) rather than pip-installing
for w in .whl/nilearn-*.whl; do
    zip -q -d "$w" 'nilearn/_assets/*' 'nilearn/datasets/data/fsaverage5/*' 'nilearn/*/tests/*' 'nilearn/tests/*' 'nilearn/*/*/tests/*' >/dev/null 2>&1 || true
done

# 2. what the device runs do not need: the non-default networks' weights, the studies no speed
#    case uses, the phantom anatomy folder, the pictures, the benches' results, the tests but the
#    CUDA ones; for "train" every weights file and study too
{
    git ls-files bench-results
    git ls-files tests | grep -vE '^tests/(conftest|test_compute)\.py$'
    if [ "${1:-}" = "train" ]; then git ls-files apps/qmri/model sample-data; fi
    git ls-files apps/qmri/model/pvcnet/pvcnet.pt apps/qmri/model/oefnet/lstm.pt apps/qmri/model/oefnet/cnn3d.pt
    git ls-files sample-data/anatomy sample-data/studies/labels
    git ls-files 'sample-data/studies/sub-1001_*' 'sample-data/studies/sub-1002_*' 'sample-data/studies/sub-1000_T1w*'
    git ls-files '*.png'
} | sort -u > "$LIST"
xargs -a "$LIST" git rm -q --cached --
{ echo '# gpu_session slim begin'; sed 's|^|/|' "$LIST"; echo '# gpu_session slim end'; } >> "$EXCL"

travels=$( (git ls-files -z; git ls-files -z -o --exclude-standard) | xargs -0 du -cb 2>/dev/null | tail -1 | cut -f1)
whl=$(du -cb .whl/*.whl | tail -1 | cut -f1)
python3 -c "import sys; t, w = int(sys.argv[1]), int(sys.argv[2]); print(f'travels: {(t + w) / 2**20:.1f} MiB of 64 (tree {t / 2**20:.1f}, wheels {w / 2**20:.1f}); carry .whl'); sys.exit(t + w > 62 * 2**20)" "$travels" "$whl" \
    || echo "over 62 MiB: run 'prepare.sh restore' and slim more (e.g. 'prepare.sh train')"
