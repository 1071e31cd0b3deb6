"""Stream scoring: hit rate, false accepts per hour, detection latency (torch-free).

A keyword event [start, end] is hit by the first detection of the same label in
[start, end + tolerance_s]; every other detection is a false accept (a wrong label during a keyword
counts as one too). Latency = detection time - end of the keyword (the word must be heard out
before a decision is expected; negative when the spotter fires before the word ends).
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np

from .data import KEYWORDS, Event

TOLERANCE_S = 1.5


@dataclass
class StreamScore:
    keywords: int
    hits: int
    false_accepts: int
    hours: float
    latency_mean_s: float | None
    latency_median_s: float | None
    latency_p90_s: float | None

    @property
    def hit_rate(self) -> float:
        return self.hits / max(1, self.keywords)

    @property
    def fa_per_hour(self) -> float:
        return self.false_accepts / self.hours if self.hours > 0 else float("nan")

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(hit_rate=self.hit_rate, fa_per_hour=self.fa_per_hour)
        return d


def score_stream(detections, events: list[Event], duration_s: float, tolerance_s: float = TOLERANCE_S):
    """Match detections to keyword events; returns (StreamScore, per-detection verdicts)."""
    import bisect

    kw = [e for e in events if e.label in KEYWORDS]
    used = [False] * len(kw)
    lat, verdicts, fa = [], [], 0
    starts = [e.start_s for e in kw]
    ordered = all(a <= b for a, b in zip(starts, starts[1:]))
    span = max((e.end_s - e.start_s for e in kw), default=0.0) + tolerance_s
    for d in sorted(detections, key=lambda d: d.time_s):
        match = None
        # events in start order: only those starting in [t - longest event - tolerance, t] can match
        # (the same first-in-list match as scanning them all; hours-long streams stay linear)
        lo, hi = ((bisect.bisect_left(starts, d.time_s - span - 1e-9), bisect.bisect_right(starts, d.time_s))
                  if ordered else (0, len(kw)))
        for i in range(lo, hi):
            e = kw[i]
            if not used[i] and e.label == d.label and e.start_s <= d.time_s <= e.end_s + tolerance_s:
                match = i
                break
        if match is None:
            fa += 1
            verdicts.append("false accept")
        else:
            used[match] = True
            lat.append(d.time_s - kw[match].end_s)
            verdicts.append("hit")
    L = np.array(lat)
    s = StreamScore(len(kw), int(sum(used)), fa, duration_s / 3600.0,
                    float(L.mean()) if len(L) else None, float(np.median(L)) if len(L) else None,
                    float(np.percentile(L, 90)) if len(L) else None)
    return s, verdicts


def run_spotter(spotter, pcm: np.ndarray, chunk: int = 1600):
    """Feed a whole recording in chunks (as fast as possible); returns the detections."""
    spotter.reset()
    dets = []
    for i in range(0, len(pcm), chunk):
        dets += spotter.process(pcm[i:i + chunk])
    return dets
