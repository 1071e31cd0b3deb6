"""The clairvoyant oracle of the control evaluation: best expected accuracy among the budgets that
would have met the deadline at each recorded step."""
from types import SimpleNamespace

import numpy as np

from sims.control_eval import oracle


def profile(acc):
    lat = np.arange(1, 9) * 1e-4                      # lat(K) = K * 100 µs, K = 1..8
    return SimpleNamespace(latency_s=lat, accuracy=np.asarray(acc, dtype=float))


def trace(slowdowns):
    s = np.asarray(slowdowns, dtype=float)
    k = np.full(len(s), 4)                           # every step ran at K = 4 ...
    return SimpleNamespace(latency_s=s * 4e-4, k=k)  # ... and took slowdown x lat(4)


def test_monotone_curve_runs_the_largest_feasible_budget():
    k, miss, _ = oracle(trace([1.0, 2.0, 8.0]), profile(np.linspace(0.5, 0.9, 8)), deadline_s=8e-4)
    assert k.tolist() == [8, 4, 1] and miss == 0.0


def test_non_monotone_curve_runs_the_most_accurate_feasible_budget():
    acc = [0.3, 0.6, 0.8, 0.9, 0.95, 0.94, 0.94, 0.93]   # peaks at K = 5, as a measured sweep can
    k, miss, mean_acc = oracle(trace([1.0, 1.0, 2.0]), profile(acc), deadline_s=8e-4)
    assert k.tolist() == [5, 5, 4]
    assert mean_acc == np.mean([0.95, 0.95, 0.9])


def test_no_feasible_budget_is_a_miss_at_k_min():
    k, miss, _ = oracle(trace([1.0, 20.0]), profile(np.linspace(0.5, 0.9, 8)), deadline_s=8e-4)
    assert k.tolist() == [8, 1] and miss == 0.5
