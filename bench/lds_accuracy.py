"""Task accuracy of a trained model streamed in exact vs LDS spectral mode (float32 engines).

    python bench/lds_accuracy.py CHECKPOINT [--tol 1e-3] [--ks 1,2,4,8,16,32] [--json F]

Compiles the checkpoint twice (exact ring-buffer FIR, and the HSV-sized ladder at --tol), streams
every sequence of the task's test split (and of the whole task, train + test, for more samples)
through both StreamEngines in float32 — all sequences as parallel streams, one frame per step, the
decision read at the last step as in training — and prints accuracy per K, the change, and how many
decisions flipped. Also the streamed logits' relative difference (LDS vs exact).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def stream_logits(prog, X, K, dtype=np.float32):
    from essm_stream.engine import StreamEngine
    eng = StreamEngine(prog, batch=X.shape[0], dtype=dtype)
    return eng.run(np.ascontiguousarray(X.transpose(1, 0, 2)).astype(dtype), K)      # (T, B, d_out)


def compare(exact, ladder, X, y, ks):
    rows = []
    for K in ks:
        ye, yl = stream_logits(exact, X, K), stream_logits(ladder, X, K)
        pe, pl = ye[-1].argmax(-1), yl[-1].argmax(-1)
        rel = float(np.abs(yl - ye).max() / np.abs(ye).max())
        rows.append({"K": K, "acc_exact": float(np.mean(pe == y)), "acc_lds": float(np.mean(pl == y)),
                     "flipped": int(np.sum(pe != pl)), "n": int(len(y)), "logit_rel_diff": rel})
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("checkpoint")
    p.add_argument("--tol", type=float, default=1e-3)
    p.add_argument("--ks", default="1,2,4,8,16,32")
    p.add_argument("--json")
    a = p.parse_args(argv)
    from essm_stream.checkpoint import load_checkpoint
    from essm_stream.commands.sweep import dataset_for
    from essm_stream.compile import compile_model

    model, meta = load_checkpoint(a.checkpoint)
    ds = dataset_for(meta)
    ks = [min(int(k), model.cfg.k_max) for k in a.ks.split(",")]
    exact = compile_model(model)
    ladder = compile_model(model, spectral="lds", tol=a.tol)
    print(f"{ds.name}: L={model.cfg.seq_len}, ladder N per layer {ladder.spectral['n']}, "
          f"fit error {max(ladder.spectral['error']):.1e} (tol {a.tol:g})")
    out = {"checkpoint": a.checkpoint, "tol": a.tol, "n": ladder.spectral["n"], "splits": {}}
    splits = {"test": (ds.X_test, ds.y_test),
              "all": (np.concatenate([ds.X_train, ds.X_test]), np.concatenate([ds.y_train, ds.y_test]))}
    for name, (X, y) in splits.items():
        rows = compare(exact, ladder, X, y, ks)
        out["splits"][name] = rows
        print(f"\n{name} ({len(y)} sequences), float32 engines")
        print("| K | exact | LDS | change | flipped decisions | max logit diff (rel.) |")
        print("|---|---|---|---|---|---|")
        for r in rows:
            print(f"| {r['K']} | {100 * r['acc_exact']:.2f}% | {100 * r['acc_lds']:.2f}% | "
                  f"{100 * (r['acc_lds'] - r['acc_exact']):+.2f} pp | {r['flipped']} / {r['n']} | "
                  f"{r['logit_rel_diff']:.1e} |")
    if a.json:
        from essm_stream.fileio import atomic_write_bytes
        atomic_write_bytes(a.json, json.dumps(out, indent=1).encode())
    return 0


if __name__ == "__main__":
    sys.exit(main())
