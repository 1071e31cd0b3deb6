"""The demo's bundled recording: a clean speech track (unseen test voices) shipped as 8-bit μ-law in
an .npz (silence between words compresses to nothing), plus its event list; background noise is
added at load time from a fixed seed, so every install plays the same 16 kHz int16 stream without
espeak-ng. `make_bundle` (build time) writes essm_stream/assets/kws_demo.npz.
"""
from __future__ import annotations

import json
from dataclasses import asdict
from pathlib import Path

import numpy as np

from . import data as D

ASSET = Path(__file__).resolve().parent.parent / "assets" / "kws_demo.npz"


def make_bundle(utts: list[D.Utterance], path=ASSET, seconds: float = 40.0, seed: int = 7,
                p_keyword: float = 0.65, noise_seed: int = 8, snr_db=(10.0, 25.0)) -> dict:
    speech, events = D.compose_stream(utts, seconds, seed=seed, gap_s=(0.8, 1.8), p_keyword=p_keyword)
    np.savez_compressed(path, mulaw=D.mulaw_encode(speech / max(1e-9, float(np.abs(speech).max())) * 0.7),
                        sr=np.int64(D.SR), events=np.array(json.dumps([asdict(e) for e in events])),
                        noise=np.array(json.dumps({"seed": noise_seed, "snr_db": list(snr_db)})))
    return {"path": str(path), "bytes": Path(path).stat().st_size, "events": len(events),
            "keywords": sum(e.label in D.KEYWORDS for e in events)}


def load_recording(path=ASSET) -> tuple[np.ndarray, list[D.Event]]:
    """(int16 PCM at 16 kHz, events) of the bundled recording, noise mixed in deterministically."""
    z = np.load(path, allow_pickle=False)
    speech = D.mulaw_decode(z["mulaw"])
    speech[np.abs(speech) < 1e-4] = 0.0                # μ-law's zero code decodes to ~1e-5: true silence
    noise = json.loads(str(z["noise"]))
    pcm = D.add_background(speech, seed=noise["seed"], snr_db=tuple(noise["snr_db"]))
    events = [D.Event(**e) for e in json.loads(str(z["events"]))]
    return np.clip(np.round(pcm * 32767), -32768, 32767).astype(np.int16), events


def make_bundle_from_items(items: list[dict], path=ASSET, seconds: float = 40.0, seed: int = 7,
                           noise_seed: int = 8, snr_db=(10.0, 25.0), gap_s=(0.8, 1.6)) -> dict:
    """The bundled recording from voice-bank items (kws/voices.py: keywords alone and in sentences,
    with their keyword times), e.g. a held-out family's voices, so the demo shows what a user of an
    unheard voice sees. Same file format as make_bundle (μ-law speech, events, noise seed)."""
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(items))
    parts, events, t = [np.zeros(int(rng.uniform(*gap_s) * D.SR))], [], 0
    t = len(parts[0])
    for i in order:
        j = items[i]
        a = j["audio"].astype(np.float64)
        if t + len(a) > (seconds - 0.5) * D.SR:
            continue
        a = a / (np.abs(a).max() + 1e-12) * 10 ** (rng.uniform(-6, 0) / 20)
        if j.get("label"):
            events.append(D.Event(j["label"], round(t / D.SR + j["kw_start"], 3), round(t / D.SR + j["kw_end"], 3),
                                  f'{j["text"]} ({j["voice"]})'))
        parts.append(a)
        g = np.zeros(int(rng.uniform(*gap_s) * D.SR))
        parts.append(g)
        t += len(a) + len(g)
    speech = np.concatenate(parts)[: int(seconds * D.SR)]
    speech = np.pad(speech, (0, int(seconds * D.SR) - len(speech)))
    np.savez_compressed(path, mulaw=D.mulaw_encode(speech / max(1e-9, float(np.abs(speech).max())) * 0.7),
                        sr=np.int64(D.SR), events=np.array(json.dumps([asdict(e) for e in events])),
                        noise=np.array(json.dumps({"seed": noise_seed, "snr_db": list(snr_db)})))
    return {"path": str(path), "bytes": Path(path).stat().st_size, "events": len(events),
            "keywords": sum(e.label in D.KEYWORDS for e in events),
            "voices": sorted({items[i]["voice"] for i in order})}
