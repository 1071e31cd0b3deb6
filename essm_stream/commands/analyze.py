"""essm-stream analyze: how small a ladder state each layer's Hankel filter bank needs (LDS mode)."""
HELP = "Hankel singular values per layer, the ladder size N for a tolerance, and fit error vs N"
DESCRIPTION = (
    "For every layer of a program: the Hankel singular values (HSVs) of its σ^1/4-scaled filter bank "
    "(optionally weighted by ||M_k||), the smallest ladder state N whose measured fit error is <= --tol "
    "(the N `compile --spectral lds` would use), and the error at each N of --ns. Layers with the "
    "same filters and weights are fitted once. Without a PROGRAM, --seq-len analyzes the bare Hankel "
    "bank at those lengths (K̄ = --k-max). Prints a table; --plot draws HSVs and error vs N.")


def add_arguments(p):
    from essm_stream.commands._args import fraction, int_list, positive_int
    p.add_argument("program", nargs="?", help="a StreamProgram file (.essm) from `essm-stream compile`")
    p.add_argument("--seq-len", type=int_list(lo=4),
                   help="instead of a program: comma-separated window lengths L of the bare bank")
    p.add_argument("--k-max", type=positive_int, default=32, help="filters per bank with --seq-len")
    p.add_argument("--tol", type=fraction, default=1e-3, help="fit error the chosen N must reach, in (0, 1)")
    p.add_argument("--ns", type=int_list(lo=1), default=[4, 8, 12, 16, 20, 24, 28, 32, 40, 48],
                   help="comma-separated N for the error curve")
    p.add_argument("--weighted", action="store_true", help="weight filter k by ||M_k||_op (programs only)")
    p.add_argument("--no-buffer", action="store_true",
                   help="the no-buffer variant (MCU targets: no ring of L inputs, ~1e-2 accuracy)")
    p.add_argument("--plot", help="write HSVs and error-vs-N curves to this PNG")
    p.add_argument("--json", help="write the analysis to this JSON file")


def banks_of_program(prog, weighted: bool):
    """[(label, h (L, K̄), weights or None)] per layer, read from the program's arrays."""
    import numpy as np
    a = prog.arrays
    nl, Kb, L = a["phir"].shape
    d = prog.cfg.d_model
    out = []
    for l in range(nl):
        phi = a["phir"][l, :, ::-1].T                                 # (L, K̄), τ ascending
        h = phi * a["sigma"][l][None, :] ** 0.25
        w = None
        if weighted:   # Mcat[l][:, d + k d: d + (k+1) d] = σ_k^{1/4} M_k
            Ms = a["Mcat"][l][:, d:].reshape(d, Kb, d).transpose(1, 0, 2)
            w = np.array([np.linalg.norm(Ms[k], 2) for k in range(Kb)]) / a["sigma"][l] ** 0.25
        out.append((f"layer {l}", h, w))
    return out


def analyze_banks(banks, tol, ns, buffered=True, progress=True):
    """Fit each distinct bank once; returns a list of per-bank result dicts."""
    import hashlib

    import numpy as np
    from tqdm import tqdm

    from essm_stream import lds
    from essm_stream.errors import ConfigError

    done, results = {}, []
    for label, h, w in tqdm(banks, desc="fitting ladders", disable=not progress):
        key = hashlib.sha256(h.tobytes() + (b"" if w is None else np.asarray(w).tobytes())).hexdigest()
        if key not in done:
            f = lds.hankel_svd(h if w is None else h * w[None, :])
            curve = lds.error_curve(h, ns, buffered=buffered, weights=w, factors=f)
            try:
                fit = lds.fit_ladder(h, tol, buffered=buffered, weights=w, factors=f)
                # each filter's error relative to its own norm: tol is σ^{1/4}-weighted, so the
                # high-k filters (weight < tol) are reproduced only in that weighted sense
                norms = np.linalg.norm(h, axis=0)
                own = fit.err * norms.max() / norms
                chosen = {"N": fit.N, "source": fit.source, "error": fit.weighted_err,
                          "per_filter_error": fit.err.tolist(), "own_relative_error": own.tolist(),
                          "filters_within_1pct": int(np.sum(own < 1e-2)),
                          "filters_within_10pct": int(np.sum(own < 1e-1))}
            except ConfigError as e:
                chosen = {"N": None, "source": None, "error": None, "note": str(e)}
            done[key] = {"L": int(h.shape[0]), "K": int(h.shape[1]), "hsv": curve["hsv"][:64],
                         "curve": curve["rows"], "chosen": chosen}
        results.append({"label": label, "same_as": next((r["label"] for r in results if r["key"] == key), None),
                        "key": key, **done[key]})
    return results


def format_table(results, tol, buffered, weighted=False):
    rows = []
    mode = "buffered (exact window)" if buffered else "NO-BUFFER variant (MCU; ~1e-2 class)"
    err = ("max_k w_k ||h̃_k - h_k||_2 / max_j w_j ||h_j||_2, w_k = ||M_k||" if weighted
           else "max_k ||h̃_k - h_k||_2 / max_j ||h_j||_2")
    rows.append(f"ladder fit, {mode}, tol {tol:g} (error = {err})")
    rows.append(f"{'bank':<16}{'L':>6}{'N':>5}{'L/N':>8}{'error':>10}  poles     HSV_N+1/HSV_1  "
                f"filters within 1% / 10% of their own norm")
    for r in results:
        c = r["chosen"]
        if c["N"] is None:
            rows.append(f"{r['label']:<16}{r['L']:>6}{'-':>5}{'':>8}{'':>10}  {c['note']}")
            continue
        hsv_next = r["hsv"][c["N"]] if c["N"] < len(r["hsv"]) else float("nan")
        rows.append(f"{r['label']:<16}{r['L']:>6}{c['N']:>5}{r['L'] / c['N']:>8.1f}{c['error']:>10.2e}  "
                    f"{c['source']:<10}{hsv_next:<15.1e}{c['filters_within_1pct']:>3} / {c['filters_within_10pct']:<3}"
                    f" of {r['K']}" + (f"  (= {r['same_as']})" if r["same_as"] else ""))
    rows.append("")
    ns = [row["N"] for row in results[0]["curve"]]
    rows.append("error vs N   " + "".join(f"{n:>8} " for n in ns))
    for r in results:
        if r["same_as"]:
            continue
        rows.append(f"{r['label']:<13}" + "".join(
            f"{row['error']:>8.1e}" + (" " if row["source"] == "era" else "g") for row in r["curve"]))
    rows.append("(g: geometric fallback poles: the ERA poles at that N were not real in (0,1), or fitted worse)")
    return "\n".join(rows)


def plot(results, path, tol):
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from essm_stream.fileio import save_figure

    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for r in results:
        if r["same_as"]:
            continue
        lab = r["label"] if "L=" in r["label"] else f"{r['label']} (L={r['L']})"
        a1.semilogy(range(1, len(r["hsv"]) + 1), r["hsv"], ".-", label=lab)
        a2.semilogy([row["N"] for row in r["curve"]], [row["error"] for row in r["curve"]], "o-", label=lab)
        if r["chosen"]["N"]:
            a2.plot([r["chosen"]["N"]], [r["chosen"]["error"]], "k*", ms=10)
    a1.set(xlabel="index", ylabel="HSV / HSV_1", title="Hankel singular values of the filter bank")
    a1.set_ylim(1e-17, 2)
    a2.axhline(tol, color="gray", ls="--", lw=1, label=f"tol {tol:g}")
    a2.set(xlabel="ladder state N", ylabel="max filter error (rel.)", title="fit error vs N (* = chosen N)")
    for a in (a1, a2):
        a.grid(True, which="both", alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path)


def run(a):
    import json

    from essm_stream.commands._args import check_inputs, check_outputs
    from essm_stream.errors import ConfigError
    from essm_stream.fileio import atomic_write_bytes

    if not 0 < a.tol < 1:
        raise ConfigError(f"--tol must be in (0, 1), got {a.tol}")
    ns = a.ns
    if bool(a.program) == bool(a.seq_len):
        raise ConfigError("give either a PROGRAM file or --seq-len L[,L...] (not both)")
    check_inputs(("program", a.program))
    check_outputs(("--plot", a.plot), ("--json", a.json))
    if a.program:
        from essm_stream.program import StreamProgram
        prog = StreamProgram.load(a.program)
        banks = banks_of_program(prog, a.weighted)
        if prog.spectral is not None:
            s = prog.spectral
            print(f"this program runs spectral='lds' ({'buffered' if s['buffered'] else 'NO-BUFFER variant'}, "
                  f"tol {s['tol']:g}): N per layer {s['n']}, recorded fit error "
                  f"{', '.join(f'{e:.1e}' for e in s['error'])}; below: a fresh analysis of its filters")
    else:
        if a.weighted:
            raise ConfigError("--weighted needs a PROGRAM (the weights are its ||M_k||)")
        from essm_stream import lds
        from essm_stream.hankel import spectral_filters
        banks = []
        for L in a.seq_len:
            if a.k_max > L:
                raise ConfigError(f"--k-max {a.k_max} exceeds L={L}")
            sigma, phi = spectral_filters(L, a.k_max)
            banks.append((f"hankel L={L}", lds.scaled_filters(phi, sigma), None))
    results = analyze_banks(banks, a.tol, ns, buffered=not a.no_buffer)
    print(format_table(results, a.tol, not a.no_buffer, a.weighted))
    if a.plot:
        plot(results, a.plot, a.tol)
        print(f"wrote {a.plot}")
    if a.json:
        out = {"tol": a.tol, "buffered": not a.no_buffer, "weighted": a.weighted,
               "banks": [{k: v for k, v in r.items() if k != "key"} for r in results]}
        atomic_write_bytes(a.json, json.dumps(out, indent=1).encode())
        print(f"wrote {a.json}")
    return 0
