#!/usr/bin/env bash
# run I's training features: every voice file of run H (runs/kws2/feats_h/embedding) + the new voices' renders
# (runs/kws6/feats_iwide/embedding, render_i.sh), linked into runs/kws6/feats_i/embedding
cd "${ESSM_ROOT:-.}"
mkdir -p runs/kws6/feats_i/embedding
for f in runs/kws2/feats_h/embedding/*.npz runs/kws6/feats_iwide/embedding/*.npz; do
    ln -sfn "$(readlink -f "$f")" "runs/kws6/feats_i/embedding/$(basename "$f")"
done
