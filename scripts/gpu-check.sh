#!/usr/bin/env bash
# GPU check for v2idetr, in under 8 minutes on one GPU: the inference speed table (engines and
# precisions), the training-step table (steps/s, peak memory) and the tests marked `cuda`.
# Needs only what `make test` installs. Usage: scripts/gpu-check.sh [OUT_DIR]   (default runs/gpu-check)
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-runs/gpu-check}
BIN=.venv/bin
mkdir -p "$OUT"
make -s .venv/.installed >/dev/null || { echo "gpu-check: set-up failed (make .venv/.installed)"; exit 1; }
"$BIN/python" -c "import torch, sys; ok = torch.cuda.is_available(); print('device:', torch.cuda.get_device_name() if ok else 'no CUDA device'); sys.exit(0 if ok else 1)" \
  || { echo "gpu-check: no CUDA device here; nothing to check"; exit 1; }
R50=(--config configs/student-r50.yaml --size 512 --device cuda)  # overrides go last: --batch takes a list
status=0
step() {  # step NAME SECONDS COMMAND...: run with a time limit, keep going on failure
  local name=$1 limit=$2; shift 2
  echo "== $name (limit ${limit}s)"
  local t0=$SECONDS
  timeout "$limit" "$@" 2>&1 | tee "$OUT/$name.txt"
  local rc=${PIPESTATUS[0]}
  echo "== $name: exit $rc in $((SECONDS - t0)) s"
  [ "$rc" -eq 0 ] || status=1
}
step speed-eager 100 "$BIN/v2idetr" bench speed "${R50[@]}" --batch 1 32 --backends eager onnx \
  --precision fp32 bf16 fp16 --iters 30 --out "$OUT/speed-eager.json" model.backbone_weights=none
step speed-graph 220 "$BIN/v2idetr" bench speed "${R50[@]}" --batch 1 32 --backends eager graph \
  --precision bf16 --iters 30 --out "$OUT/speed-graph.json" model.backbone_weights=none
step train-step 80 "$BIN/v2idetr" bench speed "${R50[@]}" --train --batch 8 --iters 5 --warmup 2 \
  --out "$OUT/train-step.json" model.backbone_weights=none train.amp=bf16 train.activation_checkpointing=true
step cuda-tests 60 "$BIN/python" -m pytest -q -m cuda -p no:cacheprovider tests
echo "== summary"
"$BIN/python" - "$OUT" <<'PY'
import json, sys
from pathlib import Path
out = Path(sys.argv[1])
for name in ("speed-eager", "speed-graph"):
    f = out / f"{name}.json"
    if f.is_file():
        for r in json.loads(f.read_text())["rows"]:
            if r["model"] == "student":
                what = f"{r['fps']:.1f} FPS, p50 {r['latency_ms_p50']:.2f} ms" if not r["error"] else r["error"]
                print(f"student {r['backend']:<7} {r['precision']:<4} batch {r['batch']:>2}: {what}")
f = out / "train-step.json"
if f.is_file():
    for r in json.loads(f.read_text())["train_rows"]:
        what = f"{r['steps_per_s']:.2f} steps/s, {r['frames_per_s']:.1f} frames/s, peak {r.get('peak_memory_mb', 0):.0f} MB" if not r["error"] else r["error"]
        print(f"train {r['stage']:<8} batch {r['batch']}: {what}")
PY
echo "gpu-check: $([ $status -eq 0 ] && echo all steps passed || echo SOME STEPS FAILED: see $OUT)"
exit $status
