"""essm-stream run: stream frames from a file through a compiled program, one step at a time."""
HELP = "stream a .npy/.npz of frames through a compiled program at a budget K (torch-free)"
DESCRIPTION = """Stream input frames through a StreamProgram with the numba engine, one frame per step,
exactly as a device would, and report per-step latency and (when labels are given) accuracy.

Input: a .npy of frames (T, d_in) or sequences (N, T, d_in), or an .npz with X (and optionally y,
labels (N,) read at each sequence's last step). Every sequence starts from a reset engine; with
--batch B, B sequences are streamed side by side as B independent streams.
The budget is fixed (--K) or a schedule per step (--schedule 32,4,4,16 repeated to length T).
No torch is imported."""


def add_arguments(p):
    from essm_stream.commands._args import int_list, positive_int

    p.add_argument("program", help="a program file written by `essm-stream compile`")
    p.add_argument("input", help=".npy (T, d_in) / (N, T, d_in) frames, or .npz with X [and y]")
    p.add_argument("-K", "--K", type=positive_int, default=None, help="runtime spectral budget (default: K̄)")
    p.add_argument("--schedule", type=int_list(lo=1), help="comma-separated per-step budgets, cycled over the sequence")
    p.add_argument("--batch", type=positive_int, default=1, help="sequences streamed side by side")
    p.add_argument("--dtype", choices=["float32", "float64"], default="float32")
    p.add_argument("--limit", type=positive_int, default=None, help="stream at most this many sequences")
    p.add_argument("-o", "--output", help="write the outputs (N, T, d_out) to this .npy")


def _load_input(path):
    import numpy as np

    from essm_stream.errors import DataFileError, ShapeError

    try:
        if path.endswith(".npz"):
            z = np.load(path, allow_pickle=False)
            if "X" not in z:
                raise ShapeError(f"{path!r} has no array 'X' (found {sorted(z.files)})")
            return z["X"], (z["y"] if "y" in z else None)
        X = np.load(path, allow_pickle=False)
        if not isinstance(X, np.ndarray):
            raise ShapeError(f"{path!r} is an archive of arrays; name it .npz and store the frames as X")
        return X, None
    except (OSError, ValueError, EOFError) as e:   # ShapeError is a ValueError: re-raised as is below
        if isinstance(e, ShapeError):
            raise
        raise DataFileError(f"cannot read frames from {path!r}: {e}") from None


def run(a):
    import time

    import numpy as np
    from tqdm.auto import tqdm

    from essm_stream.commands._args import check_outputs
    from essm_stream.engine import StreamEngine
    from essm_stream.errors import ConfigError, ShapeError, check_budget
    from essm_stream.program import StreamProgram

    if a.K is not None and a.schedule:
        raise ConfigError("give either --K or --schedule, not both")
    check_outputs(("-o/--output", a.output))
    prog = StreamProgram.load(a.program)
    X, y = _load_input(a.input)
    if X.ndim == 2:
        X = X[None]
    if X.ndim != 3 or X.shape[-1] != prog.d_in:
        raise ShapeError(f"frames must be (T, {prog.d_in}) or (N, T, {prog.d_in}), got {X.shape}")
    if not (np.issubdtype(X.dtype, np.floating) or np.issubdtype(X.dtype, np.integer)):
        raise ShapeError(f"frames must be numbers, got dtype {X.dtype}")
    if X.shape[0] == 0 or X.shape[1] == 0:
        raise ShapeError(f"{a.input!r} holds no frames (shape {X.shape}): nothing to stream")
    if y is not None:
        if not np.issubdtype(y.dtype, np.integer) or y.shape not in ((X.shape[0],), X.shape[:2]):
            raise ShapeError(f"labels y must be integers of shape (N,) = ({X.shape[0]},) or (N, T) = "
                             f"{X.shape[:2]}, got shape {y.shape} dtype {y.dtype}")
    if a.limit:
        X, y = X[: a.limit], (None if y is None else y[: a.limit])
    N, T, _ = X.shape
    if a.schedule:
        sched = np.array([check_budget(k, prog.k_max, "--schedule value") for k in a.schedule], dtype=np.int64)
        Ks = np.resize(sched, T)
    else:
        Ks = np.full(T, prog.k_max if a.K is None else check_budget(a.K, prog.k_max, "--K"), dtype=np.int64)
    B = max(1, min(a.batch, N))
    dtype = np.float32 if a.dtype == "float32" else np.float64
    eng = StreamEngine(prog, batch=B, dtype=dtype)
    eng.warmup()
    Y = np.zeros((N, T, prog.d_out), dtype=dtype)
    lat = np.zeros((N + B - 1) // B * T)
    frame = np.zeros((B, prog.d_in), dtype=dtype)
    n_steps = 0
    for i in tqdm(range(0, N, B), desc="stream", unit="seq", disable=N // B < 4):
        chunk = X[i:i + B].astype(dtype)
        eng.reset()
        for t in range(T):
            frame[: len(chunk)] = chunk[:, t]
            t0 = time.perf_counter_ns()
            out = eng.step(frame if B > 1 else frame[0], int(Ks[t]))
            lat[n_steps] = time.perf_counter_ns() - t0
            n_steps += 1
            Y[i:i + len(chunk), t] = (out if B > 1 else out[None])[: len(chunk)]
    lat = lat[:n_steps] / 1e3
    p50, p99 = np.percentile(lat, [50, 99])
    print(f"{N} sequence(s) x {T} steps, batch {B}, {a.dtype}, K {'schedule' if a.schedule else int(Ks[0])}: "
          f"step latency p50 {p50:.1f} us, p99 {p99:.1f} us, p99/p50 {p99 / p50:.2f}")
    if y is not None:
        if y.ndim == 1:
            acc = float(np.mean(Y[:, -1].argmax(-1) == y))
        else:
            acc = float(np.mean(Y.argmax(-1) == y))
        print(f"accuracy {100 * acc:.2f}% over {N} sequence(s)")
    if a.output:
        import io

        from essm_stream.fileio import atomic_write_bytes
        buf = io.BytesIO()
        np.save(buf, Y)
        atomic_write_bytes(a.output, buf.getvalue())
        print(f"wrote {a.output}")
    return 0
