#!/usr/bin/env bash
# run H's checkpoint choice (H_rule.txt): every snapshot (step_*, as they appear) and, after training, the last checkpoint,
# read on the fold's validation (calib select --fa-on neg); one JSON line each in runs/kws2/cal_select_h.jsonl
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
exec nice -n 10 ${PYTHON:-.venv/bin/python} - <<'PY'
import json, logging, subprocess, time
from pathlib import Path
from essm_stream.kws.calib import select
from essm_stream.kws.streamtrain import build_fold_program
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
M = Path("runs/kws2/models_h/ho-festival.ked+festival.slt")
cache, out = Path("runs/kws2/cal_programs"), "runs/kws2/cal_select_h.jsonl"
fold = "festival:ked_diphone,festival:cmu_us_slt_arctic_hts"
pid = int(subprocess.run("pgrep -f 'kws.streamtrain runs/kws2/feats_h'", shell=True, capture_output=True, text=True).stdout.split()[0])
def alive():
    return Path(f"/proc/{pid}").exists()
def compiled(ck, name):
    d = cache / f"models_h_{name}"
    if not (d / "kws.essm").is_file():
        d.mkdir(parents=True, exist_ok=True)
        for n, src in (("last.safetensors", ck), ("norm.json", M / "norm.json")):
            if not (d / n).exists():
                (d / n).symlink_to(src.resolve())
        build_fold_program(d, note=f"run H {name}")
    return d / "kws.essm"
done = set()
while True:
    running = alive()
    cks = sorted(M.glob("step_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    todo = [c for c in cks if c.stem not in done and time.time() - c.stat().st_mtime > 5]
    if todo:
        select("runs/kws2/sets_h", [compiled(c, c.stem) for c in todo], cache, out, fold, fa_on="neg")
        done |= {c.stem for c in todo}
    elif not running:
        break
    else:
        time.sleep(30)
select("runs/kws2/sets_h", [compiled(M / "last.safetensors", "last")], cache, out, fold, fa_on="neg")
PY
