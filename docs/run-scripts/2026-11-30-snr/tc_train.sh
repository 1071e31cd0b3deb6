#!/usr/bin/env bash
# kws7: TC-ResNet8 on the H fold's training streams (runs/kws7/TC_rule.txt) -> runs/kws7/models_tc/<fold>/tcresnet.*
cd "${ESSM_ROOT:-.}"   # the repository root (runs/ holds the generated data)
export PYTHONPATH=$PWD OMP_NUM_THREADS=1 NUMBA_NUM_THREADS=1
exec nice -n 10 ${PYTHON:-.venv/bin/python} - <<'PY'
import logging, time, json, torch
torch.set_num_threads(1)
logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
from essm_stream.kws.baseline_stream import train_tcresnet
t = time.process_time()
r = train_tcresnet("runs/kws2/feats_h", "runs/kws7/models_tc/ho-festival.ked+festival.slt", "ho-festival.ked+festival.slt",
                   steps=30000)
r["cpu_s"] = time.process_time() - t
print(json.dumps(r))
PY
