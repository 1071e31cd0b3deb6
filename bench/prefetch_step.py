"""The engine's step with and without the convolution's prefetch of the mixing weights, interleaved.

    python bench/prefetch_step.py [--settings 0,2,4] [--points edge:1:32,edge:1:4,paper:1:32] [--rounds 7]
                                  [--workers 5 --per-worker] [--peers] [--fp16]

A setting is a value of $ESSM_PREFETCH ("N" lines per step of τ, or "N,HINT" with LLVM's locality
hint; "0": no prefetch compiled; numba_config.prefetch). The prefetch is a constant of the machine
code, so each setting runs in a worker process of its own (its own kernel cache key); the workers
stay up and take turns: every round times each setting's points once, in the same order, back to
back (a sample is the median of n steps after warm-up). --workers N starts N processes per setting
(their samples pooled): one process's step time can differ from another's of the same build by up
to ≈ 10 % for its whole life (seen here, 2026-11-30; where its arrays land in memory is the likely
cause), which one process per setting would read as the setting's effect. --peers adds a worker timing the bench's
tuned torch step and ONNX Runtime (IO binding) on the edge points in the same rounds, and prints the
engine's ratios to them formed inside each round. Prints median [min-max] over the rounds and the
1-minute load average of each round. Run it under /work/signals/quiet.sh for numbers to publish.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
STEPS = {"edge": 2000, "paper": 60}


def _points(spec: str):
    out = []
    for p in spec.split(","):
        c, B, K = p.split(":")
        out.append((c, int(B), int(K)))
    return out


def _aligned_copy(a: np.ndarray, align: int) -> np.ndarray:
    """a's values in a new array whose data starts on a multiple of `align` bytes."""
    buf = np.empty(a.nbytes + align, np.uint8)
    off = (-buf.ctypes.data) % align
    out = buf[off:off + a.nbytes].view(a.dtype).reshape(a.shape)
    out[...] = a
    return out


def _worker_engine(points, fp16: bool, align: int = 0) -> None:
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    from essm_stream.engine import StreamEngine
    from targets import make_program
    rng = np.random.default_rng(0)
    engs = {}
    for c, B, K in points:
        if (c, B) not in engs:
            prog = make_program(c)
            if fp16:
                prog = prog.with_mix_weights("fp16")
            eng = StreamEngine(prog, batch=B)
            if align and not getattr(eng, "_packed", False):   # (the engine's W, state and scratch moved to
                # `align`-byte boundaries: a measurement; a packed one-stream engine's are views of one aligned buffer)
                eng._W, eng._state, eng._work = (_aligned_copy(x, align) for x in (eng._W, eng._state, eng._work))
                a_ = list(eng._step_args)
                a_[2], a_[5], a_[7] = eng._W, eng._state, eng._work
                eng._step_args = tuple(a_)
                eng._fast_of = None   # (rebind the compiled entry point to the new arrays' call)
            eng.run(rng.standard_normal((prog.cfg.seq_len + 1, B, prog.cfg.d_in)).astype(np.float32), prog.cfg.k_max)
            frames = rng.standard_normal((16, B, prog.cfg.d_in)).astype(np.float32)
            engs[(c, B)] = (eng, [f if B > 1 else f[0] for f in frames])
    _serve(lambda: _time_points(points, lambda c, B, K: (engs[(c, B)][0].step, engs[(c, B)][1], K)))


def _worker_peers(points) -> None:
    sys.path.insert(0, HERE)
    sys.path.insert(0, ROOT)
    import torch
    torch.set_num_threads(1)
    from peers import OnnxStep, TunedTorchStep
    from targets import make_program
    rng = np.random.default_rng(0)
    progs = {c: make_program(c) for c in {p[0] for p in points}}
    steps = {}
    for c, B, K in points:
        fr = rng.standard_normal((16, B, progs[c].cfg.d_in)).astype(np.float32)
        steps[("torch", c, B, K)] = (TunedTorchStep(progs[c], B, K).step, [torch.from_numpy(f) for f in fr])
        steps[("onnx", c, B, K)] = (OnnxStep(progs[c], B, K).step, list(fr))

    def one_round():
        out = {}
        for (who, c, B, K), (fn, fr) in steps.items():
            out[f"{who} {c}:{B}:{K}"] = _median_us(fn, fr, STEPS[c] // (10 if who == "torch" else 4))
        return out
    _serve(one_round)


def _median_us(fn, frames, n: int) -> float:
    from targets import _median_step   # (the project bench's timing loop: 5 warm-up steps, then n)
    return _median_step(fn, frames, n, warm=5) * 1e6


def _time_points(points, get):
    out = {}
    for c, B, K in points:
        fn, fr, K = get(c, B, K)
        out[f"{c}:{B}:{K}"] = _median_us(lambda x, fn=fn, K=K: fn(x, K), fr, STEPS[c] // max(1, B))
    return out


def _serve(one_round) -> None:
    print("ready", flush=True)
    for line in sys.stdin:
        if line.strip() != "go":
            break
        print(json.dumps(one_round()), flush=True)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0], formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    ap.add_argument("--settings", default="0,2", help="comma-separated values of ESSM_PREFETCH ('N' or 'N;HINT')")
    ap.add_argument("--points", default="edge:1:32,edge:1:4,paper:1:32", help="config:B:K, comma-separated")
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--peers", action="store_true", help="time tuned torch and ONNX Runtime on the edge points too")
    ap.add_argument("--fp16", action="store_true", help="the programs compiled with --weights fp16")
    ap.add_argument("--workers", type=int, default=1, help="worker processes per setting (samples pooled)")
    ap.add_argument("--per-worker", action="store_true", help="also print each worker's median per point")
    ap.add_argument("--align", type=int, default=0, help="move each engine's W, state and scratch to BYTES-aligned "
                    "copies (a measurement: numpy gives them 16-byte alignment, the layout assumes 64)")
    ap.add_argument("--worker", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    points = _points(a.points)
    if a.worker == "peers":
        _worker_peers([p for p in points if p[0] == "edge"])
        return 0
    if a.worker is not None:
        _worker_engine(points, a.fp16, a.align)
        return 0
    settings = a.settings.split(",")
    workers = {}
    for i in range(a.workers):
        for s in settings:
            env = dict(os.environ, ESSM_PREFETCH=s.replace(";", ","), PYTHONPATH=ROOT)
            workers[f"{s}#{i}"] = subprocess.Popen([sys.executable, __file__, "--worker", s, "--points", a.points]
                                                   + (["--fp16"] if a.fp16 else []) + ["--align", str(a.align)],
                                                   env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    if a.peers:
        workers["peers"] = subprocess.Popen([sys.executable, __file__, "--worker", "peers", "--points", a.points],
                                            env=dict(os.environ, PYTHONPATH=ROOT), stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, text=True)
    for name, w in workers.items():   # (each compiles or loads its kernels first)
        if w.stdout.readline().strip() != "ready":
            raise SystemExit(f"worker {name} failed to start")
    res = {name: [] for name in settings + ["peers"]}
    byw: dict = {}
    loads = []
    try:
        for r in range(a.rounds):
            loads.append(os.getloadavg()[0])
            for name, w in workers.items():
                w.stdin.write("go\n")
                w.stdin.flush()
                res[name.split("#")[0]].append(json.loads(w.stdout.readline()))
                byw.setdefault(name, []).append(res[name.split("#")[0]][-1])
    finally:
        for w in workers.values():
            w.stdin.close()
            w.wait()

    def fmt(v):
        v = np.asarray(v)
        return f"{np.median(v):8.2f} [{v.min():.2f}-{v.max():.2f}]"
    print(f"load average (1 min) per round: {' '.join(f'{x:.2f}' for x in loads)}; "
          f"{a.rounds} interleaved rounds, {a.workers} worker(s) per setting; µs per step, median [min-max]{' (fp16 program)' if a.fp16 else ''}")
    for c, B, K in points:
        key = f"{c}:{B}:{K}"
        for s in settings:
            v = [r[key] for r in res[s]]
            line = f"{c} B={B} K={K:<2d} ESSM_PREFETCH={s:5s} {fmt(v)}"
            if s != settings[0]:
                base = [r[key] for r in res[settings[0]]]
                line += f"   {settings[0]}/{s}: {fmt(np.divide(base, v))}x"
            if a.peers and c == "edge":
                for who in ("torch", "onnx"):
                    pv = np.repeat([r[f"{who} {key}"] for r in res["peers"]], a.workers)
                    line += f"   vs {who} {fmt(np.divide(pv, v))}x"
            print(line)
        if a.per_worker:
            for s in settings:
                meds = [np.median([r[key] for r in byw[f"{s}#{i}"]]) for i in range(a.workers)]
                print(f"{c} B={B} K={K:<2d} ESSM_PREFETCH={s:5s} per worker: " + " ".join(f"{m:.2f}" for m in meds))
        if a.peers and c == "edge":
            for who in ("torch", "onnx"):
                print(f"{c} B={B} K={K:<2d} {who:>19s} {fmt([r[f'{who} {key}'] for r in res['peers']])}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
