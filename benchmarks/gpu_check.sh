#!/usr/bin/env bash
# The GPU check of issue 27, one command, ≤ 10 minutes on one H100-class GPU:
#
#   1. graph-matching pretrain step split (encoder / affinity / solver / backward, bf16) at batch 512
#      and 1024 (benchmarks/pretrain_step.py, batched on-device solver);
#   2. bf16 frozen-feature throughput, bare embed loop vs the harness's frozen protocols
#      (benchmarks/frozen_overhead.py --device cuda --amp);
#   3. a 5-minute-capped graph-matching pretraining on ../shared/data (test images of the
#      shared-data suite excluded) with its kNN monitor: step 0 = random init, then every interval.
#
#   bash benchmarks/gpu_check.sh                 # on the GPU machine, from the repository root
#   GPU_CHECK_SMOKE=1 bash benchmarks/gpu_check.sh   # tiny sizes on CPU: checks the script end to end
#
# Environment: DATA (default ../shared/data), OUT (default gpu-check-out), ENCODER (resnet50),
# STEP_SIZE (view size of part 1, default 160: batch 1024 = 2048 views of R50 fit in 80 GB in bf16),
# PRETRAIN_MINUTES (5), GM_OPTIONS (default "-o gcn_residual=true -o noise_scale=0.2": the CPU recipe of
# README "Pretraining"; the paper's defaults collapsed at CPU scale, GM_OPTIONS= runs them). Each part's output goes to OUT/<part>.log; a failed part is reported at the
# end and does not stop the others. Needs the package installed (pip install -e .).
set -u
cd "$(dirname "$0")/.."
DATA=${DATA:-../shared/data}
OUT=${OUT:-gpu-check-out}
ENCODER=${ENCODER:-resnet50}
mkdir -p "$OUT"
if [ "${GPU_CHECK_SMOKE:-0}" = 1 ]; then
    DEVICE=cpu; ENCODER=resnet18; STEP_SIZE=32; BATCHES="32 64"; STEPS=1; GRAPHS=1
    FROZEN=(--suite smoke --tasks brain_tumor_linear --protocols knn --batch 32)
    PRETRAIN=(--data "$DATA/brain_tumor_mri_cls" --image-size 32 --batch-size 16 --steps 3 --max-minutes "${PRETRAIN_MINUTES:-0.2}"
              --monitor-task brain_tumor_linear --monitor-every 1 --workers 0)
    echo "GPU_CHECK_SMOKE=1: tiny sizes on the CPU (a check of this script, not a measurement)"
else
    DEVICE=cuda; STEP_SIZE=${STEP_SIZE:-160}; BATCHES="512 1024"; STEPS=5; GRAPHS=1,16,64
    FROZEN=(--suite shared-data --tasks brain_tumor_linear,retinamnist_linear --protocols linear,knn --batch 256 --amp)
    PRETRAIN=(--data "$DATA" --image-size 128 --batch-size 512 --steps 100000 --max-minutes "${PRETRAIN_MINUTES:-5}"
              --monitor-task brain_tumor_linear --monitor-task retinamnist_linear --monitor-every 100 --workers 8
              --exclude '*/masks/*' --exclude '*/1st_manual/*' --exclude '*/2nd_manual/*' --exclude '*/mask/*' --exclude '*_mask*'
              --exclude '*HO.png' --exclude 'hippocampus_3d/*' --exclude 'BreastMNIST.npz' --exclude 'pneumoniamnist.npz')
    python -c "import torch, sys; sys.exit(0 if torch.cuda.is_available() else 'no CUDA device: run on the GPU machine, or GPU_CHECK_SMOKE=1 to check the script on CPU')" || exit 1
fi
failed=()
part() {  # part NAME COMMAND...: run, tee to OUT/NAME.log, remember failures
    local name=$1; shift
    echo; echo "== $name: $*"
    local t0=$SECONDS
    if "$@" 2>&1 | tee "$OUT/$name.log"; [ "${PIPESTATUS[0]}" -ne 0 ]; then failed+=("$name"); fi
    echo "-- $name: $((SECONDS - t0)) s"
}
python -c "import torch; print('torch', torch.__version__, '|', torch.cuda.get_device_name(0) if torch.cuda.is_available() else 'no GPU')"
for b in $BATCHES; do
    part "step-split-b$b" python benchmarks/pretrain_step.py --encoder "$ENCODER" --image-size "$STEP_SIZE" --batch-size "$b" \
        --steps "$STEPS" --device "$DEVICE" --modes batched --graphs "$GRAPHS"
done
part frozen-bf16 python benchmarks/frozen_overhead.py --encoder "$ENCODER" --device "$DEVICE" "${FROZEN[@]}"
# a fresh run each time: remove only what a pretraining run writes there, never the folder itself
rm -f "$OUT/pretrain"/{checkpoint.pt,encoder.safetensors,pretrain.json,log.jsonl,metrics.jsonl,metrics.png}
# shellcheck disable=SC2086  # GM_OPTIONS is a list of -o KEY=VALUE words
part pretrain-gm lvmbench pretrain --objective graph-matching --encoder "$ENCODER" --device "$DEVICE" --out "$OUT/pretrain" --no-progress "${PRETRAIN[@]}" ${GM_OPTIONS--o gcn_residual=true -o noise_scale=0.2}
if [ -s "$OUT/pretrain/metrics.jsonl" ]; then
    echo; echo "== kNN monitor: step 0 (random init) vs the last step"
    python - "$OUT/pretrain/metrics.jsonl" <<'PY'
import json, sys
rows = [json.loads(l) for l in open(sys.argv[1]) if l.strip()]
first, last = rows[0], rows[-1]
for task, r in last["knn"].items():
    r0 = first["knn"][task]["acc"]
    print(f"{task}: random init {r0:.3f} -> step {last['step']} {r['acc']:.3f} ({r['acc'] - r0:+.3f}); "
          f"embedding rank {last['embedding'].get('effective_rank', float('nan')):.1f}, collapsed={last['collapsed']}")
print(f"wall {last['time']['wall_s']:.0f} s, {last['time']['images_per_s'] or 0:.0f} img/s in the last interval")
PY
    lvmbench pretrain plot "$OUT/pretrain" || failed+=("plot")
fi
echo
if [ ${#failed[@]} -eq 0 ]; then echo "gpu_check: all parts ran; logs in $OUT/"; else echo "gpu_check: FAILED parts: ${failed[*]} (logs in $OUT/)"; exit 1; fi
