"""essm-stream compile: checkpoint -> StreamProgram file."""
HELP = "compile a trained checkpoint into a frozen, torch-free StreamProgram file"
DESCRIPTION = ("Read a checkpoint written by `essm-stream train` (safetensors + JSON config), lay its "
               "weights out for the streaming step (σ^1/4 folded into M, filters reversed) and write a "
               "validated program file (safetensors + JSON metadata, no pickle, atomic write).")


def add_arguments(p):
    from essm_stream.commands._args import fraction, nonneg_int

    p.add_argument("checkpoint", help="model checkpoint (.safetensors) from `essm-stream train`")
    p.add_argument("-o", "--output", help="program file to write (default: CHECKPOINT with suffix .essm)")
    p.add_argument("--frontend", help="JSON file with frontend parameters to store in the program")
    p.add_argument("--budget-profile", help="JSON file with a budget profile {K: [...], accuracy: [...], ...}")
    p.add_argument("--verify", type=nonneg_int, default=64, metavar="T",
                   help="check the engine against the torch model on T random frames at K=1 and K=k_max (0: skip)")
    p.add_argument("--spectral", choices=["exact", "lds"], default="exact",
                   help="exact: ring-buffer FIR, O(L) per step, equals the model; lds: the filter bank as a "
                        "ladder of N << L poles sized by Hankel singular values, O(N) per step (docs/LDS.md)")
    p.add_argument("--tol", type=fraction, default=1e-3,
                   help="lds: max filter fit error (relative to the largest σ^1/4-scaled filter)")
    p.add_argument("--no-buffer", action="store_true",
                   help="lds: the no-buffer variant for MCU-class targets (no ring of L inputs; ~1e-2 accuracy)")
    p.add_argument("--weighted", action="store_true", help="lds: weight filter k's error by ||M_k||")
    p.add_argument("--weights", choices=["fp32", "fp16"], default="fp32",
                   help="precision of the mixing and MLP weights (Mcat, fc1.W, fc2.W): fp16 rounds them to "
                        "float16 values, which a float32 engine reads at half the bytes (faster where the step "
                        "is bound by reading them; outputs deviate from the fp32 program by ~1e-3 relative; "
                        "docs/PERFORMANCE.md)")


def run(a):
    import os

    import numpy as np

    from essm_stream.commands._args import check_inputs, check_outputs
    from essm_stream.errors import ProgramError
    from essm_stream.fileio import read_json

    if not 0 < a.tol < 1:
        raise ProgramError(f"--tol must be in (0, 1), got {a.tol}")
    if a.spectral == "exact" and (a.no_buffer or a.weighted):
        raise ProgramError("--no-buffer and --weighted apply to --spectral lds only")
    out = a.output or os.path.splitext(a.checkpoint)[0] + ".essm"
    check_inputs(("checkpoint", a.checkpoint), ("--frontend", a.frontend), ("--budget-profile", a.budget_profile))
    check_outputs(("program file (-o)", out))
    frontend = read_json(a.frontend, "frontend JSON") if a.frontend else None
    budget_profile = read_json(a.budget_profile, "budget profile JSON") if a.budget_profile else None

    try:
        from essm_stream.checkpoint import load_checkpoint   # lazy: owned by the training side
    except ImportError as e:
        raise ProgramError(f"checkpoint support is unavailable ({e}); compile a model in Python with "
                           "essm_stream.compile.compile_model") from None
    from essm_stream.compile import compile_model

    model, _meta = load_checkpoint(a.checkpoint)
    prog = compile_model(model, source_checkpoint=a.checkpoint, frontend=frontend, budget_profile=budget_profile,
                         spectral=a.spectral, tol=a.tol, lds_buffered=not a.no_buffer, lds_weighted=a.weighted,
                         mix_weights=a.weights)
    if prog.spectral is not None:
        s = prog.spectral
        print(f"LDS ladder ({'buffered' if s['buffered'] else 'NO-BUFFER variant'}): N per layer {s['n']} "
              f"(L={prog.cfg.seq_len}), fit error per layer {', '.join(f'{e:.1e}' for e in s['error'])} "
              f"<= tol {s['tol']:g}")
    # exact: the engine equals the model (float64); lds: within a stated multiple of the fit tolerance
    bound = 1e-9 if prog.spectral is None else 10 * a.tol
    if prog.mix_weights == "fp16":   # the model's weights vs their float16 rounding (the engine equals the
        bound = max(bound, 1e-2)     # rounded program's reference; this checks the rounding's effect)
    if a.verify > 0:
        import torch
        from essm_stream.engine import StreamEngine
        x = torch.randn(1, a.verify, prog.cfg.d_in, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
        m64 = model.double().eval()
        for K in sorted({1, prog.cfg.k_max}):
            with torch.inference_mode():
                ref = m64(x, K)[0].numpy()
            y = StreamEngine(prog, batch=1, dtype=np.float64).run(x[0].numpy(), K)
            err = float(np.max(np.abs(y - ref)) / max(np.max(np.abs(ref)), 1e-300))
            if not err <= bound:
                raise ProgramError(f"verification failed: engine vs model relative error {err:.2e} at K={K} "
                                   f"(bound {bound:.0e})")
            print(f"verified K={K}: engine == model (float64) to {err:.1e} relative over T={a.verify}"
                  + ("" if prog.spectral is None else f" (LDS bound 10·tol = {bound:.0e})"))
    prog.save(out)
    print(f"wrote {out}: {prog!r}")
    return 0
