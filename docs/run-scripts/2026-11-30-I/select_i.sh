#!/usr/bin/env bash
# run I's checkpoint choice (I_rule.txt): every 4 000-step snapshot after the start (step_32000, step_36000, ..., as they appear) and, after training, the last
# checkpoint, read on fold I's validation (calib select --fa-on neg, recorded cap 2 FA/h); one JSON line each in
# runs/kws6/cal_select_i.jsonl; the rule's pick is picks["10.0"] (<= 10 FA/h pooled keyword-free AND <= 2 on the
# recorded validation speakers)
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1
exec nice -n 12 ${PYTHON:-.venv/bin/python} - <<'PY'
import logging, subprocess, time
from pathlib import Path
from essm_stream.kws.calib import select
from essm_stream.kws.streamtrain import build_fold_program
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
fold = "ho-festival.ked+festival.slt~festival.lp+festival.machac+festival.mv"
M = Path("runs/kws6/models_i") / fold
cache, out = Path("runs/kws6/cal_programs"), "runs/kws6/cal_select_i.jsonl"
pid = int(subprocess.run("pgrep -f 'kws.streamtrain runs/kws6/feats_i'", shell=True, capture_output=True, text=True).stdout.split()[0])
def alive():
    return Path(f"/proc/{pid}").exists()
def compiled(ck, name):
    d = cache / f"models_i_{name}"
    if not (d / "kws.essm").is_file():
        d.mkdir(parents=True, exist_ok=True)
        for n, src in (("last.safetensors", ck), ("norm.json", M / "norm.json")):
            if not (d / n).exists():
                (d / n).symlink_to(src.resolve())
        build_fold_program(d, note=f"run I {name}")
    return d / "kws.essm"
done = set()
while True:
    running = alive()
    cks = sorted(M.glob("step_*.safetensors"), key=lambda p: int(p.stem.split("_")[1]))
    todo = [c for c in cks if c.stem not in done and int(c.stem.split("_")[1]) > 28000 and int(c.stem.split("_")[1]) % 4000 == 0 and time.time() - c.stat().st_mtime > 5]
    if todo:
        select("runs/kws6/sets_i", [compiled(c, c.stem) for c in todo], cache, out, fold, fa_on="neg", recorded_cap=2.0)
        done |= {c.stem for c in todo}
    elif not running:
        break
    else:
        time.sleep(30)
select("runs/kws6/sets_i", [compiled(M / "last.safetensors", "last")], cache, out, fold, fa_on="neg", recorded_cap=2.0)
PY
