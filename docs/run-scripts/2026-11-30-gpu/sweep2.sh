#!/usr/bin/env bash
# GPU round (issue 9), second call (the first, sweep.sh, lost its from-scratch configs and the CUDA tests to a
# missing python-flint there; F diverged to NaN under bf16 at lr 8e-4): the filter cache travels in .gpu/filters,
# non-finite steps are skipped, four configs for 3 minutes each.
# One call on the device machine from the repo root:
#   1. tests/test_cuda.py (the CUDA / AMP training path), in the background;
#   2. eight keyword stream-training configs at once on the one GPU, W wall minutes each (resumable legs;
#      a config whose leg fails is relaunched with --amp 0, then on the CPU, so one bug costs one config's time);
#   3. $OUT: machine.txt, logs.tgz (logs, train.json, test log), snap_*.tgz (weights-only snapshots chosen below).
# Inputs (ignored, carried as .gpu):  .gpu/feats/embedding = fold H's training + validation streams packed by
#   featpack (int8, step 1/12 std; espeak-ng streams halved: 15.8 h), .gpu/h28/ = run H's step 28 000 + D's norm.json.
# Local dry run: DEV=cpu W=0.3 OUT=/tmp/o bash docs/run-scripts/2026-11-30-gpu/sweep.sh
set -u
export PYTHONUNBUFFERED=1 PYTHONPATH=$PWD ESSM_CACHE_DIR=$PWD/.gpu/filters   # Hankel filters: no python-flint there
W=${W:-3}; DEV=${DEV:-cuda}; PY=${PY:-python3}
R=${R:-/tmp/sweep}; mkdir -p "$R" "$OUT"
END=$(( $(date +%s) + ${W%.*} * 60 + 60 ))
{ date -u; nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>&1
  $PY -c "import sys, torch, numpy; print(sys.version.split()[0], torch.__version__, torch.version.cuda, numpy.__version__, torch.cuda.is_available() and torch.cuda.get_device_name())"
  nproc; } > "$OUT/machine.txt" 2>&1
( timeout 240 $PY -m pytest -q -p no:cacheprovider tests/test_cuda.py > "$R/cuda_tests.log" 2>&1; echo "rc=$?" >> "$R/cuda_tests.log" ) &

FOLD=festival:ked_diphone,festival:cmu_us_slt_arctic_hts
COMMON="--test-family $FOLD --steps 1000000 --max-minutes $W --budget-clock wall --eval-every 2000 --mine-every 2000
 --keep-every 500 --warmup-steps 200 --dropout 0.1 --weight-decay 0.1 --small-k-frac 0.25 --small-k-max 8"
AUG="--aug-shift 0.3 --aug-scale 0.1 --aug-noise 0.3 --aug-drop 0.1"

run_cfg() {   # NAME AMP ARGS...: legs until the budget is spent or the wall clock says stop
    local name=$1 amp=$2; shift 2
    local out=$R/$name ext=""
    mkdir -p "$out"
    [ -f "$out/norm.json" ] || cp .gpu/h28/norm.json "$out/"          # D's normalisation, as run H and the packing
    if [ "$name" = F ] && [ ! -f "$out/last.safetensors" ]; then cp .gpu/h28/last.safetensors "$out/"; ext="--extend 1"; fi
    for mode in "--device $DEV --amp $amp" "--device $DEV --amp 0" "--device cpu --amp 0"; do
        local left=$(( END - $(date +%s) ))
        [ $left -lt 40 ] && break
        OMP_NUM_THREADS=2 timeout $left $PY -m essm_stream.kws.streamtrain .gpu/feats "$out" $COMMON "$@" $mode $ext \
            >> "$R/$name.log" 2>&1 && return 0
        echo "=== leg failed: $mode rc=$? at $(date -u +%T)" >> "$R/$name.log"
        ext=""
    done
}
run_cfg A 0 --batch-size 256 --lr 0.003 $AUG &
run_cfg A16 1 --batch-size 256 --lr 0.003 $AUG &
run_cfg B 0 --batch-size 256 --lr 0.002 $AUG --d-model 64 --n-layers 3 &
run_cfg F 0 --batch-size 256 --lr 0.0005 $AUG &
wait
$PY - "$R" "$OUT" <<'PY'
import re, sys, tarfile
from pathlib import Path
R, OUT = Path(sys.argv[1]), Path(sys.argv[2])
def snaps(d, n):          # the last snapshot and n - 1 more spread evenly over the second half of the run
    s = sorted(d.glob("step_*.safetensors"), key=lambda p: int(re.findall(r"\d+", p.stem)[0]))
    if len(s) <= n:
        return s
    half = s[len(s) // 2:-1]
    pick = [half[round(i * (len(half) - 1) / max(1, n - 2))] for i in range(n - 1)] if n > 1 else []
    return sorted(set(pick + [s[-1]]), key=s.index)
groups = {"snap_a.tgz": [("A", 10), ("A16", 10), ("F", 10)], "snap_b.tgz": [("B", 7)]}   # each < 16 MiB
for fn, cfgs in groups.items():
    with tarfile.open(OUT / fn, "w:gz") as t:
        for name, n in cfgs:
            for p in snaps(R / name, n) + [R / name / "norm.json"]:
                if p.is_file():
                    t.add(p, arcname=f"{name}/{p.name}")
with tarfile.open(OUT / "logs.tgz", "w:gz") as t:
    for p in sorted(R.glob("*.log")) + sorted(R.glob("*/train.json")):
        t.add(p, arcname=str(p.relative_to(R)))
for p in sorted(OUT.iterdir()):
    print(p.name, p.stat().st_size)
PY
tail -3 "$R/cuda_tests.log"; for f in "$R"/*.log; do echo "== $f"; grep -E "stopping|val K=32|Error|failed" "$f" | tail -3; done
