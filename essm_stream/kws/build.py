"""Build the keyword data set once and cache it: utterances, augmented clips' features, test streams.

    essm-stream kws-data --out runs/kws/data          (≈ 4 min on 2 CPU cores)

writes into --out:
    utts_train.npz / utts_test.npz    the synthesised utterances (train voices / unseen test voices)
    features.npz                      X_train, y_train, X_test, y_test: normalised log-mel (N, T, 40)
                                      + mean, std (from the training clips), labels
    frontend.json                     the frontend parameters (librosa filterbank, mean/std)
    stream_test.npz                   a long test stream (unseen voices): pcm int16 + events (JSON)
    stream_val.npz                    a shorter stream from training voices (to pick the threshold)
"""
from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from . import data as D
from ..fileio import atomic_write_text
from .frontend import LogMel, frontend_params

log = logging.getLogger(__name__)


@dataclass
class DataConfig:
    seq_len: int = 128             # frames per clip (L): 400 + 127*160 samples = 1.295 s
    window_s: float = 1.0          # speech ends inside the clip's last window_s (the pooled head's span)
    n_train: int = 12000           # augmented training clips
    n_test: int = 2400             # augmented test clips (unseen voices)
    per_keyword_train: int = 150   # utterances per keyword (train voices)
    per_unknown_train: int = 8     # utterances per unknown word
    phrases_train: int = 300       # non-keyword phrases
    per_keyword_test: int = 40
    per_unknown_test: int = 2
    phrases_test: int = 80
    stream_test_s: float = 360.0   # long evaluation stream
    stream_val_s: float = 120.0
    workers: int = 2
    seed: int = 0


def n_samples(seq_len: int) -> int:
    return 400 + (seq_len - 1) * 160


def features_of(fe: LogMel, X: np.ndarray, progress: bool = True) -> np.ndarray:
    from tqdm.auto import tqdm
    out = np.zeros((len(X), (X.shape[1] - fe.win) // fe.hop + 1, fe.n_mels), dtype=np.float32)
    for i in tqdm(range(len(X)), desc="log-mel", disable=not progress):
        out[i] = fe.features(X[i])
    return out


def save_stream(path, pcm: np.ndarray, events: list[D.Event], meta: dict) -> None:
    q = np.clip(np.round(pcm * 32767), -32768, 32767).astype(np.int16)
    np.savez(path, pcm=q, sr=np.int64(D.SR), events=np.array(json.dumps([asdict(e) for e in events])),
             meta=np.array(json.dumps(meta)))


def load_stream(path) -> tuple[np.ndarray, list[D.Event], dict]:
    z = np.load(path, allow_pickle=False)
    ev = [D.Event(**e) for e in json.loads(str(z["events"]))]
    return z["pcm"], ev, json.loads(str(z["meta"]))


def build_dataset(out: str | Path, dc: DataConfig = DataConfig(), progress: bool = True) -> dict:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    utts = {}
    for split, (k, u, p) in {"train": (dc.per_keyword_train, dc.per_unknown_train, dc.phrases_train),
                             "test": (dc.per_keyword_test, dc.per_unknown_test, dc.phrases_test)}.items():
        f = out / f"utts_{split}.npz"
        if f.is_file():
            utts[split] = D.load_utterances(f)
        else:
            utts[split] = D.synth_corpus(split, k, u, p, seed=dc.seed, workers=dc.workers, progress=progress)
            D.save_utterances(f, utts[split])
        log.info("%s: %d utterances", split, len(utts[split]))
    n = n_samples(dc.seq_len)
    win = int(dc.window_s * D.SR)
    Xa_tr, y_tr = D.make_clips(utts["train"], dc.n_train, n, win, seed=(dc.seed, 10), progress=progress)
    Xa_te, y_te = D.make_clips(utts["test"], dc.n_test, n, win, seed=(dc.seed, 11), progress=progress)
    fe = LogMel(frontend_params(), normalize=False)
    F_tr = features_of(fe, Xa_tr, progress)
    del Xa_tr
    F_te = features_of(fe, Xa_te, progress)
    mean = F_tr.reshape(-1, fe.n_mels).mean(0).astype(np.float64)
    std = F_tr.reshape(-1, fe.n_mels).std(0).astype(np.float64)
    F_tr = ((F_tr - mean) / std).astype(np.float32)
    F_te = ((F_te - mean) / std).astype(np.float32)
    params = frontend_params(mean=mean, std=std)
    atomic_write_text(out / "frontend.json", json.dumps(params))
    np.savez(out / "features.npz", X_train=F_tr, y_train=y_tr, X_test=F_te, y_test=y_te, mean=mean, std=std,
             labels=np.array(D.LABELS), config=np.array(json.dumps(asdict(dc))))
    # Long streams: test voices for the reported metrics, train voices for choosing the threshold.
    pool_te = [u.audio for u in utts["test"] if u.label == D.UNKNOWN]
    pool_tr = [u.audio for u in utts["train"] if u.label == D.UNKNOWN]
    for name, split, secs, pool, seed in (("stream_test", "test", dc.stream_test_s, pool_te, 21),
                                          ("stream_val", "train", dc.stream_val_s, pool_tr, 22)):
        sp, ev = D.compose_stream(utts[split], secs, seed=(dc.seed, seed))
        pcm = D.add_background(sp, seed=(dc.seed, seed, 1), pool=pool)
        save_stream(out / f"{name}.npz", pcm, ev, {"voices": split, "seconds": secs, "snr_db": [5, 25]})
    summary = {"seconds": time.perf_counter() - t0, "n_train": int(len(y_tr)), "n_test": int(len(y_te)),
               "utterances": {k: len(v) for k, v in utts.items()}, "voices": D.split_voices(),
               "class_counts_train": np.bincount(y_tr, minlength=len(D.LABELS)).tolist()}
    atomic_write_text(out / "summary.json", json.dumps(summary, indent=1))
    return summary


def load_features(out: str | Path):
    """The cached clips as an essm_stream.tasks.SequenceDataset (+ the frontend params)."""
    from ..tasks import SequenceDataset

    out = Path(out)
    z = np.load(out / "features.npz", allow_pickle=False)
    ds = SequenceDataset(z["X_train"], z["y_train"], z["X_test"], z["y_test"], len(D.LABELS), "kws12")
    return ds, json.loads((out / "frontend.json").read_text())
