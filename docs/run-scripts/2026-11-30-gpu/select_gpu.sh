#!/usr/bin/env bash
# the GPU round's checkpoint choice (RULE.txt): every candidate snapshot read on fold H's validation sets
# (calib select --fa-on neg); one JSON line each in runs/kws12/cal_select_gpu.jsonl
cd "${ESSM_ROOT:-.}"   # the directory that holds runs/ (the generated data)
export PYTHONPATH=${ESSM_SRC:-$PWD} OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
exec nice -n 10 ${PYTHON:-python} - <<'PY'
import logging, re
from pathlib import Path
from essm_stream.kws.calib import select
from essm_stream.kws.streamtrain import build_fold_program
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
G, cache, out = Path("runs/kws12/gpu"), Path("runs/kws12/cal_programs"), "runs/kws12/cal_select_gpu.jsonl"
fold = "festival:ked_diphone,festival:cmu_us_slt_arctic_hts"
relaunch = {"A": 9199, "A16": 8733, "B": 8493, "F": 37270}      # one fp32 step after the build failure: left out
progs = []
for cfg in ("A", "A16", "B", "F"):
    for ck in sorted(G.glob(f"{cfg}/step_*.safetensors"), key=lambda p: int(re.findall(r"\d+", p.stem)[0])):
        n = int(re.findall(r"\d+", ck.stem)[0])
        if n == relaunch[cfg]:
            continue
        d = cache / f"{cfg}_{ck.stem}"
        if not (d / "kws.essm").is_file():
            d.mkdir(parents=True, exist_ok=True)
            for name, src in (("last.safetensors", ck), ("norm.json", G / cfg / "norm.json")):
                if not (d / name).exists():
                    (d / name).symlink_to(src.resolve())
            build_fold_program(d, note=f"GPU round {cfg} {ck.stem}")
        progs.append(d / "kws.essm")
select("runs/kws2/sets_h", progs, cache, out, fold, fa_on="neg")
PY
