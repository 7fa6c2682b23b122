#!/usr/bin/env bash
# The GPU run of configs/paper-bnn-gpu.toml, time-boxed for a lent GPU machine (about 8 minutes).
# Expects the book preset's kernel bank and kernel VAEs and the MNIST wheel in $DWP_CACHE (the
# machine has no network). Writes the run folder and logs under $OUT (or ./gpu-out).
set -u
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
export PYTHONPATH=$PWD PYTHONUNBUFFERED=1 DWP_PROGRESS=0
PY=${PY:-python3}
deadline=$((SECONDS + ${BUDGET_S:-470}))
left() { echo $((deadline - SECONDS)); }
run=$OUT/paper-bnn-gpu
common=(--config configs/paper-bnn-gpu.toml --out "$run" --set grid.test_images=None
        --set "grid.workers=${WORKERS:-12}")
{
  nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv
  $PY -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.cuda.get_device_name())"
  # 1. What the whole paper preset would take on this device (a few timed steps, no training)
  timeout 60 $PY -m dwp_lib reproduce --preset paper --estimate > "$OUT/paper_estimate.txt" 2>&1
  tail -3 "$OUT/paper_estimate.txt"
  # 2. DWP vs N(0, 1) at the authors' training length, n = 50 and 100, 5 split seeds
  timeout $(( $(left) - 150 )) $PY -m dwp_lib reproduce "${common[@]}"
  # 3. the other two baselines in the same folder, while time is left
  timeout $(( $(left) - 30 )) $PY -m dwp_lib reproduce "${common[@]}" \
    --set 'grid.methods=["dwp:dwp","normal:xavier","log-uniform:xavier","det:xavier"]'
  # 4. figures and provenance of whatever finished (no new cells)
  timeout 25 $PY -m dwp_lib reproduce "${common[@]}" --set grid.enabled=false \
    --set 'grid.methods=["dwp:dwp","normal:xavier","log-uniform:xavier","det:xavier"]'
  nvidia-smi --query-gpu=memory.used,utilization.gpu --format=csv
} 2>&1 | tee "$OUT/log.txt"
tar -czf "$OUT/paper-bnn-gpu.tar.gz" -C "$OUT" paper-bnn-gpu && rm -rf "$run"
ls -la "$OUT"
