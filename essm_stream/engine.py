"""StreamEngine: B independent streams stepped one frame (or one block of frames) at a time.

All streaming state lives here, preallocated at construction (RTNeural, mamba InferenceParams)
in the sections `layout.Layout` plans: the per-layer input history as a doubled ring buffer (each
frame written at p and p + L, so the window is one contiguous slice), the ring of past outputs for
the pooled head, the ring position and step count, and the scratch the kernel works in. A step
crosses into numba once: every layer of every stream runs in compiled code (`kernels.stream_run`)
and nothing is allocated.

Budgets: K is an int, or per stream (B,); in `run` also per step (T,) or (T, B). Changing K takes
effect at that step; the history is never reset, and since the raw inputs are kept, channels
switched back on later are exact. Channels above K are neither convolved nor mixed.

Bad input (wrong shape or dtype, K out of range, NaN/Inf, a wrong `out=`) raises before any state
changes, or, with nan_policy="zero", non-finite input values are read as 0 (counted in
`replaced_inputs`). A frame whose values overflow inside the step (a finite but huge input, e.g.
3e38 in float32) is taken back, so the state is as before that frame: nan_policy="raise" raises
NonFiniteOutputError; nan_policy="zero" outputs zeros for it and counts it in `skipped_frames`.

Threads: one engine belongs to one thread at a time. A call that finds another call of the same
engine in progress raises ConcurrentUseError (nothing is changed) instead of silently mixing two
streams' updates; give each thread its own engine (they share the program). Reading what step()
returned is not a call: copy it before the next step (it is a read-only view that the next step
overwrites).

Torch-free: importing this module imports numpy, numba and the package's torch-free modules only.
"""
from __future__ import annotations

import logging
import numbers
import os
import threading
from dataclasses import dataclass

import numpy as np

from . import kernels as _k
from . import layout as _lo
from .errors import BudgetError, ConfigError, ESSMError, NonFiniteInputError, ShapeError
from .numba_config import JIT_DISABLED, limit_blas_threads
from .numba_config import half_widening as _half_widening
from .simd import HALF_COLS as _TILE_MIN_COLS
from .simd import adds_exactly
from .program import StreamProgram

log = logging.getLogger(__name__)

__all__ = ["StreamEngine", "EngineState", "warmup", "NonFiniteOutputError", "ConcurrentUseError",
           "DEFAULT_MAX_BYTES"]

NAN_POLICIES = ("raise", "zero")
DEFAULT_MAX_BYTES = 2 << 30   # an engine that would need more memory than this is refused (max_bytes=)


class NonFiniteOutputError(ESSMError, FloatingPointError):
    """A step overflowed (NaN/Inf inside the model from finite input); the state is as before that frame."""


class ConcurrentUseError(ESSMError, RuntimeError):
    """An engine was called from a second thread while a call was in progress; nothing was changed."""


@dataclass(frozen=True)
class EngineState:
    """A copy of everything that evolves while streaming (see StreamEngine.snapshot); read-only arrays.

    state: the engine's state vector (sections of `layout.STATE`, at `sections`: name -> (offset, size));
    ist: ring position, step count, pool position and counters; fingerprint: (program weights digest,
    batch, dtype, weight-vector length) of the engine it came from."""
    state: np.ndarray
    ist: np.ndarray
    batch: int
    dtype: np.dtype
    fingerprint: tuple
    sections: tuple

    def section(self, name: str) -> np.ndarray:
        o, n = dict(self.sections)[name]
        return self.state[o:o + n]

    @property
    def hist(self) -> np.ndarray:
        """Input history of every layer, flattened: per layer, blocks of layout.hist_blk(d) streams, each (2L, n_b, d) (layout.STATE)."""
        return self.section("hist")

    @property
    def pool(self) -> np.ndarray:
        """Ring of the pooled head's last outputs (empty for the step head)."""
        return self.section("pool")


def _kernel_input(a, dtype=None) -> np.ndarray:
    """`a` as the kernels take it: C-contiguous and writeable. numba compiles a separate specialization
    for a read-only array (a broadcast view, a caller's frozen array), seconds of CPU per kernel, so
    read-only inputs are copied (the kernels never write to them) instead of compiling a second kernel."""
    a = np.ascontiguousarray(a, dtype=dtype)
    return a if a.flags.writeable else a.copy()


def _readonly(a: np.ndarray) -> np.ndarray:
    v = a.view()
    v.flags.writeable = False
    return v


def _simd_takes(cfg) -> bool:
    """Does the register tile take the B > 1 mixing and MLP: outputs (d, and d_hidden with an MLP) at
    least the narrow tile wide (simd.min_cols of float32), and h's d columns, which both add into, in
    strips that do not overlap (simd.adds_exactly)? Other widths stay on the 4 × 4 tiles."""
    d_hidden = cfg.mlp_ratio * cfg.d_model if cfg.mlp else _TILE_MIN_COLS
    return min(cfg.d_model, d_hidden) >= _TILE_MIN_COLS and adds_exactly(cfg.d_model)


class StreamEngine:
    """Step a StreamProgram over `batch` independent streams in float32 or float64.

    eng.step(x_t, K) -> y_t      x_t (B, d_in), or (d_in,) when batch=1; y_t mirrors it.
                                 Returns a READ-ONLY VIEW of the engine's output buffer that the
                                 next step overwrites (nothing allocates per step): copy it to keep
                                 it (`y.copy()`), or pass out= (validated before anything runs).
    eng.run(X, K) -> Y           X (T, d_in) (batch=1) or (T, B, d_in): one call for T frames,
                                 bit-for-bit the same as T calls of step; Y is a fresh array.
    eng.reset(); s = eng.snapshot(); eng.restore(s)   (restore validates every field of s)

    max_bytes: the engine's total memory (weights, state, scratch) is computed before anything is
    allocated and refused above this (default DEFAULT_MAX_BYTES; None: no limit).

    threads: how many threads one call uses (default 1: the single-thread kernel, nothing else
    runs). With N > 1 (exact programs; at most numba's pool, NUMBA_NUM_THREADS) each layer runs
    as N tasks on numba's thread pool (kernels.conv_mix_par, one fork per layer): B >= 4N splits
    the streams (the whole layer per task), fewer streams split the filter channels of the
    convolution and their columns of the mixing weights. Frames with little work (parallel_min_work)
    stay on the calling thread. The results equal the float64 reference within the same
    tolerance as threads=1 (sums in another order). Worth it where a step's work is large and N
    cores are otherwise idle: docs/PERFORMANCE.md "Threads" has the measurements and the rule. The
    pool's threads (OpenMP's by default) spin for a while after each step, taking a core from
    anything else running, and a step waits for its slowest thread (jitter on a shared machine).
    """

    def __init__(self, program: StreamProgram, batch: int = 1, dtype=np.float32,
                 nan_policy: str = "raise", kernel: str = "numba", max_bytes: int | None = DEFAULT_MAX_BYTES,
                 background_compile: bool = False, threads: int = 1):
        if not isinstance(program, StreamProgram):
            raise ConfigError(f"StreamEngine needs a StreamProgram (StreamProgram.load(path)), got {type(program).__name__}")
        if isinstance(batch, bool) or not isinstance(batch, numbers.Integral) or not 1 <= batch <= 1 << 20:
            raise ConfigError(f"batch must be an int in [1, {1 << 20}], got {batch!r}")
        dt = np.dtype(dtype)
        if dt not in (np.dtype(np.float32), np.dtype(np.float64)):
            raise ConfigError(f"dtype must be np.float32 or np.float64, got {dt}")
        if nan_policy not in NAN_POLICIES:
            raise ConfigError(f"nan_policy must be one of {NAN_POLICIES}, got {nan_policy!r}")
        if kernel not in ("numba", "ref"):
            raise ConfigError(f"kernel must be 'numba' or 'ref' (plain numpy reference), got {kernel!r}")
        if not isinstance(background_compile, bool):
            raise ConfigError(f"background_compile must be True or False, got {background_compile!r}")
        max_threads = _max_threads()
        if isinstance(threads, bool) or not isinstance(threads, numbers.Integral) or not 1 <= threads <= max_threads:
            raise ConfigError(f"threads must be an int in [1, {max_threads}] (numba's thread pool: NUMBA_NUM_THREADS), "
                              f"got {threads!r}")
        if threads > 1 and (program.spectral is not None or getattr(program.cfg, "kind", "essm") == "lru"):
            raise ConfigError(f"threads={threads}: only exact (ring-buffer FIR) programs split a step across threads; "
                              "this program is " + ("an LRU" if getattr(program.cfg, "kind", "essm") == "lru"
                                                    else f"spectral={program.spectral.get('mode')!r}") + " one: use threads=1")
        cfg = program.cfg
        self.threads = int(threads)
        # numba's parallel loop runs on the calling thread's share of the pool (numba.set_num_threads,
        # thread-local, default the whole pool): where the pool is larger than `threads`, every call
        # sets it, so that a step wakes `threads` threads and no more
        self._pin = None
        if self.threads > 1 and kernel == "numba" and max_threads > self.threads:
            import numba
            self._pin = lambda n=self.threads: numba.set_num_threads(n)
        if self.threads > 1 and kernel == "numba" and not JIT_DISABLED:
            _check_threading_layer()
        self.program, self.cfg, self.batch, self.dtype = program, cfg, int(batch), dt
        self.nan_policy = nan_policy
        self._kernel_name = kernel
        background = kernel == "numba" and background_compile and not JIT_DISABLED
        if kernel == "numba":
            self._kernel = None   # bound below, once the layout (and so the mode) is known
            if not background:    # (a background compile limits them in its thread, before the handover)
                limit_blas_threads()  # the kernel's GEMMs run on one thread (numba_config.limit_blas_threads)
        else:
            from .reference import stream_run_ref
            self._kernel = stream_run_ref
        B = self.batch
        # mix_weights="fp16": a float32 single-thread exact engine mixes from Mcat's float16 copy (half the
        # bytes); other engines (float64, threads > 1, LDS, no hardware half widening) mix the same
        # float16-rounded values from the float32 Mcat
        mix16 = (getattr(program, "mix_weights", "fp32") == "fp16" and dt == np.float32 and self.threads == 1
                 and program.spectral is None and _half_widening())
        # (and, where the program's MLP weights are float16 values too, its MLP from their copies: mlp16)
        mlp16 = mix16 and "fc1.W" in getattr(program, "fp16_arrays", ())
        # one stream on a float32 single-thread exact engine: the mixing and MLP GEMVs in essm_stream.gemv's
        # register-held kernels (the weights packed input-major; $ESSM_GEMV1=0 keeps the tiles: measurements)
        gemv1 = (B == 1 and dt == np.float32 and self.threads == 1 and program.spectral is None
                 and os.environ.get("ESSM_GEMV1", "1") != "0")
        # several streams on a float32 single-thread exact engine: the mixing and the MLP as register-tiled
        # products of all the streams' rows (simd.tile_product; Mcat, fc1.W, fc2.W packed input-major),
        # where the tile takes their widths; $ESSM_GEMM_T=0 keeps the 4 × 4 tiles (measurements)
        gemm_t = (B > 1 and dt == np.float32 and self.threads == 1 and program.spectral is None
                  and _simd_takes(cfg) and os.environ.get("ESSM_GEMM_T", "1") != "0")
        self.layout = lay = _lo.Layout(cfg, B, program.spectral, threads=self.threads,
                                       par_min=parallel_min_work() if self.threads > 1 else (0, 0),
                                       mix16=mix16, mlp16=mlp16, gemv1=gemv1, gemm_t=gemm_t)   # spectral: exact FIR or LDS ladder
        need = dt.itemsize * (lay.n_w + lay.state_len + lay.work_total + 2 * B * (cfg.d_in + cfg.d_out))
        if max_bytes is not None and need > max_bytes:
            raise ConfigError(f"this engine would need {need / 2**20:.1f} MiB (program {program!r}, batch={B}, "
                              f"{dt.name}), more than max_bytes={max_bytes / 2**20:.1f} MiB; pass a larger max_bytes "
                              "if that is intended")
        self.nbytes = need
        self._lay, self._off = lay.lay, lay.off
        if self._kernel is None:
            self._kernel = _k.kernel_for(lay.lay)   # only this mode's step is compiled
        self._undo = _k.undo_for(lay.lay)           # (compiled on the first overflow only)
        self._W = lay.pack(program.arrays, dt)
        # state
        self._state = _lo.aligned_zeros(lay.state_len, dt)   # (cache-line aligned, as W: see aligned_zeros)
        self._ist = np.zeros(_lo.N_IST, dtype=np.int64)
        self._work = _lo.aligned_zeros(lay.work_total, dt)
        # the one-stream kernel takes W | state | work as one buffer and off | lay | ist as another (fewer
        # arguments to unbox per call, kernels.unpack_one); the engine works on their views
        self._packed = kernel == "numba" and self._kernel in (_k.stream_run_fir_one, _k.stream_run_fir_one_narrow)
        if self._packed:
            self._F, self._I = _k.pack_one(self._W, self._off, self._lay, self._state, self._ist, self._work)
            self._W, self._off, self._lay, self._state, self._ist, self._work = _k.unpack_one_py(self._F, self._I)
        self._sections = tuple((name, (int(lay.lay[_lo.LAY.index("st_" + name)]), n))
                               for name, n in lay.state_sizes.items())
        # step buffers (so that step allocates nothing); step returns read-only views of _y1
        self._x1 = np.zeros((1, B, cfg.d_in), dtype=dt)
        self._K1 = np.zeros((1, B), dtype=np.int64)
        self._y1 = np.zeros((1, B, cfg.d_out), dtype=dt)
        self._x1_b, self._y1_b = self._x1[0], _readonly(self._y1[0])
        self._x1_v, self._y1_v = self._x1[0, 0], _readonly(self._y1[0, 0])
        self._nan_zero = nan_policy == "zero"
        # step() passes the same objects every call (state is updated in place), so build the
        # argument tuple once: a step is then one shape/dtype check, two copies and the call
        if self._packed:   # (X flat: step() passes a frame x_t (d_in,) itself in place of _x1's)
            self._step_args = (self._x1.reshape(-1), self._K1, self._F, self._I, self._y1, self._nan_zero)
        else:
            self._step_args = (self._x1, self._K1, self._W, self._off, self._lay, self._state,
                               self._ist, self._work, self._y1, self._nan_zero)
        self._rest = self._step_args[1:]
        self._k_max = int(cfg.k_max)
        self._shape_b = (B, cfg.d_in)
        self._shape_v = (cfg.d_in,) if B == 1 else None
        self._fingerprint = (program.weights_digest, B, dt.str, int(self._W.shape[0]))
        # one call at a time: a one-item list used as a token; list.pop / list.append are atomic in
        # CPython (free-threaded builds lock the list), and cost ~0.1 µs a pair where a
        # threading.Lock acquire(False)/release pair measured ~0.4 µs here (docs/RELIABILITY.md)
        self._token = [True]
        # background compile: the numpy reference kernel steps the same state until the compiled
        # kernel is ready; the first call after that switches (_interim), at a call boundary
        self._compiler = None
        self.handover_step = None if background else 0
        if background:
            # (the one-stream kernel calls no BLAS: nothing to limit, threadpoolctl not loaded in the compile)
            # (the reference's GELU imports scipy.special: the compile thread imports it before it compiles, so
            # that the first reference step does not; a kernel loaded from the cache needs no reference step)
            self._compiler = _BackgroundCompile(self._kernel, self._step_args, blas=not _k.one_stream_mode(lay.lay),
                                                before_compile=_import_reference_deps)
            self._kernel = self._interim
            import functools

            from .reference import stream_run_ref
            # (W's float64 copies unpacked once, not on every reference step: W never changes)
            self._ref = functools.partial(self._ref_packed if self._packed else stream_run_ref,
                                          w=_lo.unpack(self._W, self._off, self._lay))

    # -- properties ---------------------------------------------------------------------------
    @property
    def d_in(self) -> int:
        return self.cfg.d_in

    @property
    def d_out(self) -> int:
        return self.cfg.d_out

    @property
    def k_max(self) -> int:
        return self.cfg.k_max

    @property
    def steps(self) -> int:
        """Frames consumed since construction or the last reset."""
        return int(self._ist[_lo.IST_T])

    @property
    def replaced_inputs(self) -> int:
        """Non-finite input values read as 0 under nan_policy='zero' since the last reset."""
        return int(self._ist[_lo.IST_NREPLACED])

    @property
    def skipped_frames(self) -> int:
        """Frames that overflowed and were taken back (outputs 0) under nan_policy='zero' since the last reset."""
        return int(self._ist[_lo.IST_SKIPPED])

    def __repr__(self) -> str:
        th = f", threads={self.threads}" if self.threads > 1 else ""
        return (f"StreamEngine({self.program!r}, batch={self.batch}, dtype={self.dtype.name}, "
                f"nan_policy={self.nan_policy!r}{th}, steps={self.steps})")

    # -- background compile --------------------------------------------------------------------
    @property
    def compiled(self) -> bool:
        """Do the engine's calls run the compiled (numba) kernel? False while a background compile
        is in progress (the numpy reference kernel steps meanwhile) and for kernel='ref'."""
        return self._kernel_name == "numba" and self.handover_step is not None

    @property
    def compile_info(self) -> dict | None:
        """For background_compile=True: {"done", "cpu_s" (the compile thread's CPU seconds), "wall_s",
        "source" ("compiled", "cache": loaded from the disk cache, "memory": this process had it), "handover_step" (frames consumed before the compiled
        kernel took over, None until then), "error"}; None otherwise."""
        c = self._compiler
        if c is None:
            return None
        return {"done": c.done.is_set(), "cpu_s": c.cpu_s, "wall_s": c.wall_s, "source": c.source,
                "handover_step": self.handover_step, "error": None if c.error is None else repr(c.error)}

    def wait_compiled(self, timeout: float | None = None) -> bool:
        """Block until a background compile has finished (at most `timeout` seconds); True when it has.
        The next call of the engine then runs the compiled kernel. Re-raises the compile's error, if
        any (the engine keeps stepping with the reference kernel then). True at once without one."""
        c = self._compiler
        if c is None:
            return True
        if not c.done.wait(timeout):
            return False
        if c.error is not None:
            raise c.error
        return True

    def _ref_packed(self, X1, Ks, F, I, Y, nan_zero, w=None):
        """The numpy reference kernel called with the one-stream kernels' packed arguments."""
        from .reference import stream_run_ref
        return stream_run_ref(X1.reshape(Ks.shape[0], 1, -1), Ks, self._W, self._off, self._lay, self._state,
                              self._ist, self._work, Y, nan_zero, w=w)

    def _call(self, X3, Ks, Y) -> int:
        """The kernel over the block X3 (T, B, d_in), Ks (T, B) -> Y (T, B, d_out), in its argument convention."""
        if self._packed:
            return self._kernel(X3.reshape(-1), Ks, self._F, self._I, Y, self._nan_zero)
        return self._kernel(X3, Ks, self._W, self._off, self._lay, self._state, self._ist, self._work, Y,
                            self._nan_zero)

    def _interim(self, *args):
        """The kernel while the compiled one is being built: the numpy reference (same signature,
        same state layout, float64 maths rounded to the engine's dtype where stored), then, from the
        first call after the compile finished, the compiled kernel (the switch is this call)."""
        c = self._compiler
        if c.done.is_set():
            if c.error is None:
                self._kernel = c.dispatcher
                self.handover_step = self.steps
                return self._kernel(*args)
            log.error("the background compile of the engine's kernel failed (%r): "
                      "stepping with the numpy reference kernel", c.error)
            self._kernel = self._ref
        return self._ref(*args)

    # -- one call at a time -------------------------------------------------------------------
    def _acquire(self) -> None:
        try:
            self._token.pop()
        except IndexError:
            raise ConcurrentUseError("this StreamEngine is in use by another thread (a call is in progress); "
                                     "nothing was changed. Give each thread its own engine.") from None

    # -- stepping -----------------------------------------------------------------------------
    def _check_frame_array(self, x, what: str) -> None:
        if not isinstance(x, np.ndarray):
            raise ShapeError(f"{what} must be a numpy array of dtype {self.dtype.name}, got {type(x).__name__}")
        if x.dtype != self.dtype:
            raise ShapeError(f"{what} has dtype {x.dtype}, this engine runs in {self.dtype.name}: "
                             f"pass x.astype(np.{self.dtype.name}) or build the engine with dtype=np.{x.dtype.name}")

    # step()'s fast path: the budget last written into _K1 (None: unknown), and the kernel's compiled
    # entry point for the step arguments' types, bound on the first step of each kernel (_bind_fast)
    _k1 = None
    _fast_of = None
    _fast = None
    _direct = None   # (packed engines: _fast once it is the compiled entry point, which takes a frame itself)

    def _bind_fast(self) -> None:
        """Bind _fast to the compiled entry point of the kernel's overload for exactly the types of
        _step_args (the same array objects at every step), which skips numba's dispatch (matching
        argument types to a compiled signature: ≈ 0.17 µs of the ≈ 0.5 µs a call costs for ten
        arguments). Until the dispatcher has compiled that signature (the first step compiles it),
        and for kernels that are not numba dispatchers (kernel='ref', NUMBA_DISABLE_JIT, a wrapper),
        _fast is the kernel itself. A packed engine (the one-stream kernel: six arguments, ≈ 0.15 µs to
        unbox instead of ≈ 0.32: bench/call_overhead.py) also gets _direct, the entry point that step() hands a C-contiguous
        frame of the right dtype and shape to as it is (no np.copyto into _x1: ≈ 0.14 µs)."""
        k = self._kernel
        self._fast, self._fast_of, self._direct = k, k, None
        overloads = getattr(k, "overloads", None)
        if overloads is None:
            return
        from numba import typeof
        cres = overloads.get(tuple(typeof(a) for a in self._step_args))
        if cres is None:
            self._fast_of = None          # not compiled yet: call the dispatcher, look again next step
        else:
            self._fast = cres.entry_point
            if self._packed:              # (the entry point does not look at types: step() passes it
                self._direct = self._fast  # only C-contiguous frames of the engine's dtype and shape)

    def _set_step_budget(self, K) -> None:
        self._k1 = None
        if isinstance(K, numbers.Integral) and not isinstance(K, (bool, np.bool_)):
            if not 1 <= K <= self.cfg.k_max:
                raise BudgetError(f"budget K={int(K)} is out of range [1, {self.cfg.k_max}]")
            self._K1.fill(K)
            return
        if isinstance(K, np.ndarray) and K.dtype.kind in "iu" and K.shape == (self.batch,):
            np.copyto(self._K1[0], K, casting="unsafe")   # range checked by the kernel
            return
        raise BudgetError(f"budget K must be an int in [1, {self.cfg.k_max}] or an integer array of shape "
                          f"({self.batch},) (one per stream), got {type(K).__name__} "
                          f"{getattr(K, 'dtype', '')} {getattr(K, 'shape', K)!r}")

    def step(self, x_t, K, out: np.ndarray | None = None) -> np.ndarray:
        """One frame of every stream at budget K (int or (B,) ints) -> the output frame.

        Returns a read-only view of the engine's output buffer, overwritten by the next step:
        `ys.append(eng.step(x, K).copy())` to collect outputs. With out= (an array of the engine's
        dtype and exactly the output's shape) the frame is copied there and out is returned; a
        wrong out raises before the step runs."""
        try:
            self._token.pop()          # one call at a time (inlined _acquire: this is the hot path)
        except IndexError:
            self._acquire()            # raises ConcurrentUseError
        try:
            # fast path (the common call: an int K in range, an ndarray frame of the engine's dtype
            # and shape); anything else takes the checking path below, which explains what is wrong
            if type(K) is int and 1 <= K <= self._k_max and type(x_t) is np.ndarray \
                    and x_t.dtype == self.dtype and out is None:
                if self._kernel is not self._fast_of:      # first step, or the kernel changed
                    self._bind_fast()
                shp = x_t.shape
                fd = self._direct                          # (packed: a C-contiguous x_t itself is the
                ret = None                                 # kernel's frame, no copy; else copied into _x1)
                if shp == self._shape_v:
                    ret = self._y1_v
                    if fd is not None and x_t.flags.c_contiguous:
                        xd = x_t
                    else:
                        np.copyto(self._x1_v, x_t)
                        fd = None
                elif shp == self._shape_b:
                    ret = self._y1_b
                    if fd is not None and x_t.flags.c_contiguous:
                        xd = x_t.ravel()                   # (a view: (1, d_in) as (d_in,))
                    else:
                        np.copyto(self._x1_b, x_t)
                        fd = None
                if ret is not None:
                    if K != self._k1:                      # (the budget array is only rewritten when K changes)
                        self._K1.fill(K)
                        self._k1 = K
                    if self._pin is not None:              # (threads > 1 on a larger pool only)
                        self._pin()
                    if fd is not None:                     # NaN/Inf checked in the kernel first
                        status = fd(xd, *self._rest)
                    else:
                        status = self._fast(*self._step_args)
                    if status != _k.OK:
                        self._raise(self._overflowed(status, self._x1, self._K1, self._y1), self._K1)
                    return ret
            self._check_frame_array(x_t, "x_t")
            B, d_in = self.batch, self.cfg.d_in
            if x_t.shape == (B, d_in):
                ret = self._y1_b
            elif B == 1 and x_t.shape == (d_in,):
                ret = self._y1_v
            else:
                want = f"({B}, {d_in})" + (f" or ({d_in},)" if B == 1 else "")
                raise ShapeError(f"x_t has shape {x_t.shape}, expected {want}")
            if out is not None and (not isinstance(out, np.ndarray) or out.shape != ret.shape
                                    or out.dtype != self.dtype or not out.flags.writeable):
                raise ShapeError(f"out must be a writeable {self.dtype.name} array of shape {ret.shape} (the "
                                 f"output frame's), got {type(out).__name__} {getattr(out, 'dtype', '')} "
                                 f"{getattr(out, 'shape', '')}; nothing was changed")
            self._set_step_budget(K)
            np.copyto(self._x1_b if ret is self._y1_b else self._x1_v, x_t)
            if self._pin is not None:
                self._pin()
            status = self._kernel(*self._step_args)
            if status != _k.OK:
                self._raise(self._overflowed(status, self._x1, self._K1, self._y1), self._K1)
            if out is not None:
                np.copyto(out, ret)
                return out
            return ret
        finally:
            self._token.append(True)

    def _budgets_for_block(self, K, T: int) -> np.ndarray:
        B, Kb = self.batch, self.cfg.k_max
        if isinstance(K, numbers.Integral) and not isinstance(K, (bool, np.bool_)):
            if not 1 <= K <= Kb:
                raise BudgetError(f"budget K={int(K)} is out of range [1, {Kb}]")
            return np.full((T, B), int(K), dtype=np.int64)
        if hasattr(K, "numpy") and hasattr(K, "detach"):   # a torch LongTensor, as model(x, K) takes
            K = K.detach().cpu().numpy()
        if not isinstance(K, np.ndarray):
            K = np.asarray(K)
        if K.dtype.kind not in "iu":
            raise BudgetError(f"budget K must be integers, got dtype {K.dtype}")
        if K.ndim == 1 and K.shape[0] == T:                   # per step (same for every stream)
            return _kernel_input(np.broadcast_to(K[:, None], (T, B)), np.int64)
        if K.ndim == 1 and K.shape[0] == B:                   # per stream (same at every step)
            return _kernel_input(np.broadcast_to(K[None, :], (T, B)), np.int64)
        if K.ndim == 2 and K.shape in ((T, B), (1, B)):
            return _kernel_input(np.broadcast_to(K, (T, B)), np.int64)
        raise BudgetError(f"budget K of shape {K.shape} fits neither (T,)=({T},), (B,)=({B},) nor (T, B)=({T}, {B})")

    def run(self, X, K, out: np.ndarray | None = None) -> np.ndarray:
        """T frames in one call (no Python per step): X (T, d_in) if batch=1, or (T, B, d_in).

        K: int, (T,) per step, (B,) per stream, or (T, B). A 1-D K whose length is both T and B
        is read as per step. Returns (T, d_out) or (T, B, d_out).
        """
        self._acquire()
        try:
            self._check_frame_array(X, "X")
            B, d_in = self.batch, self.cfg.d_in
            if X.ndim == 3 and X.shape[1:] == (B, d_in):
                X3, squeeze = X, False
            elif X.ndim == 2 and B == 1 and X.shape[1] == d_in:
                X3, squeeze = X.reshape(X.shape[0], 1, d_in), True
            else:
                want = f"(T, {B}, {d_in})" + (f" or (T, {d_in})" if B == 1 else "")
                raise ShapeError(f"X has shape {X.shape}, expected {want}")
            T = X3.shape[0]
            Ks = self._budgets_for_block(K, T)
            X3 = _kernel_input(X3)
            if out is None:
                Y = np.empty((T, B, self.cfg.d_out), dtype=self.dtype)
            else:
                want_shape = (T, self.cfg.d_out) if squeeze else (T, B, self.cfg.d_out)
                if not isinstance(out, np.ndarray) or out.shape != want_shape or out.dtype != self.dtype \
                        or not out.flags.c_contiguous or not out.flags.writeable:
                    raise ShapeError(f"out must be a writeable C-contiguous {self.dtype.name} array of shape "
                                     f"{want_shape}; nothing was changed")
                Y = out.reshape(T, B, self.cfg.d_out)
            if T == 0:
                return Y[:, 0] if squeeze else Y
            if self._pin is not None:
                self._pin()
            status = self._call(X3, Ks, Y)
            if status != _k.OK:
                self._raise(self._overflowed(status, X3, Ks, Y), Ks)
            return Y[:, 0] if squeeze else Y
        finally:
            self._token.append(True)

    def _overflowed(self, status: int, X3, Ks, Y) -> int:
        """After the kernel returned `status` for the block (X3, Ks) -> Y: while it is ERR_UNDO (frame
        t = ist[IST_ERR_T] of the part it ran overflowed, its writes still in the state), take that
        frame back; without nan_policy='zero' that is ERR_OVERFLOW (ist[IST_ERR_T] = t within the
        whole block); with it, the frame outputs 0, counts as skipped and the frames after it run.
        Returns the final status (OK when every overflow was skipped)."""
        t0, T = 0, X3.shape[0]
        while status == _k.ERR_UNDO:
            t = t0 + int(self._ist[_lo.IST_ERR_T])
            self._undo(self._state, self._work, self._lay, self._ist, self.batch, int(self._ist[_lo.IST_POS]))
            self._ist[_lo.IST_ERR_T] = t
            if not self._nan_zero:
                return _k.ERR_OVERFLOW
            Y[t] = 0.0
            self._ist[_lo.IST_SKIPPED] += 1
            t0 = t + 1
            if t0 == T:
                return _k.OK
            status = self._call(X3[t0:], Ks[t0:], Y[t0:])
        return status

    def _raise(self, status: int, Ks) -> None:
        if status == _k.OK:
            return
        t, b, j, k = (int(self._ist[i]) for i in (_lo.IST_ERR_T, _lo.IST_ERR_B, _lo.IST_ERR_J, _lo.IST_ERR_K))
        if status == _k.ERR_BUDGET:
            raise BudgetError(f"budget K={k} at step {t}, stream {b} is out of range [1, {self.cfg.k_max}] "
                              "(no state was changed)")
        if status == _k.ERR_NONFINITE:
            raise NonFiniteInputError(f"input holds NaN or Inf at step {t}, stream {b}, feature {j} "
                                      "(no state was changed; nan_policy='zero' reads such values as 0)")
        if status == _k.ERR_OVERFLOW:
            raise NonFiniteOutputError(
                f"values overflowed to NaN/Inf inside the model at step {t} of this call (input too large "
                f"for {self.dtype.name}?); that frame was taken back, the state is as before it "
                f"({self.steps} frames consumed so far). nan_policy='zero' skips such frames (outputs 0)")
        raise RuntimeError(f"kernel returned unknown status {status}")

    # -- state --------------------------------------------------------------------------------
    def reset(self) -> None:
        """Back to the state after construction: zero history (zero before the start), step 0."""
        self._acquire()
        try:
            self._state.fill(0)
            self._ist.fill(0)
            self._work.fill(0)
        finally:
            self._token.append(True)

    def snapshot(self) -> EngineState:
        """A copy of all streaming state; restore() it into this engine (or one of the same program,
        batch and dtype)."""
        self._acquire()
        try:
            return EngineState(_readonly(self._state.copy()), _readonly(self._ist.copy()), self.batch,
                               self.dtype, self._fingerprint, self._sections)
        finally:
            self._token.append(True)

    def _check_state(self, s: EngineState) -> None:
        """Every field of a snapshot, before any of it is copied in (a bad ring position would make the
        kernel index out of bounds)."""
        if not isinstance(s, EngineState):
            raise ConfigError(f"restore needs an EngineState from snapshot(), got {type(s).__name__}")
        if s.fingerprint != self._fingerprint:
            raise ConfigError("this snapshot was taken from an engine of another program, batch or dtype "
                              f"(snapshot: batch={s.batch!r:.20}, dtype={s.dtype!r:.20}; this engine: batch={self.batch}, "
                              f"dtype={self.dtype.name}; program digests differ: {s.fingerprint != self._fingerprint})")
        if s.batch != self.batch or s.dtype != self.dtype or s.sections != self._sections:
            raise ConfigError("snapshot fields batch / dtype / sections disagree with its fingerprint")
        for name, a, dt, shape in (("state", s.state, self.dtype, self._state.shape),
                                   ("ist", s.ist, np.dtype(np.int64), self._ist.shape)):
            if not isinstance(a, np.ndarray) or a.dtype != dt or a.shape != shape:
                raise ConfigError(f"snapshot.{name} must be a {dt} array of shape {shape}, got "
                                  f"{type(a).__name__} {getattr(a, 'dtype', '')} {getattr(a, 'shape', '')}")
        if not np.all(np.isfinite(s.state)):
            raise ConfigError("snapshot.state holds NaN or Inf")
        pos, t, pool, nrep, skipped = (int(s.ist[i]) for i in (_lo.IST_POS, _lo.IST_T, _lo.IST_POOL,
                                                               _lo.IST_NREPLACED, _lo.IST_SKIPPED))
        L, PW = int(self._lay[_lo.L_WIN]), int(self._lay[_lo.POOL_W])   # the layout's window (1 for lru)
        if t < 0 or nrep < 0 or skipped < 0:
            raise ConfigError(f"snapshot counters must be >= 0 (steps {t}, replaced {nrep}, skipped {skipped})")
        if pos != t % L or pool != t % PW:
            raise ConfigError(f"snapshot ring positions ({pos}, pool {pool}) do not follow from its step count {t} "
                              f"(expected {t % L}, {t % PW})")

    def restore(self, state: EngineState) -> None:
        """Copy a snapshot back in, after checking every field of it (nothing changes if one is wrong)."""
        self._acquire()
        try:
            self._check_state(state)
            np.copyto(self._state, state.state)
            np.copyto(self._ist, state.ist)
        finally:
            self._token.append(True)

    def warmup(self) -> None:
        """Compile (or load from the on-disk cache) the kernel for this dtype, without touching state.
        With a background compile: wait for it (the next call runs the compiled kernel)."""
        if self._compiler is not None:
            self.wait_compiled()
            return
        if self._kernel_name == "numba" and not JIT_DISABLED:
            # compiled in a helper thread, waited for: the same machine code, but measured ≈ 0.8 s less
            # system time on the demo's cold start than compiling in the main thread (90k instead of
            # 207k page faults; docs/PERFORMANCE.md "Start-up")
            c = _BackgroundCompile(self._kernel, self._step_args, blas=not _k.one_stream_mode(self._lay))
            c.thread.join()
            if c.error is not None:
                raise c.error
        s = self.snapshot()
        self.step(np.zeros((self.batch, self.cfg.d_in), dtype=self.dtype), 1)
        self.restore(s)



# threads=N (kernels.conv_mix_par) forks and joins numba's pool once per layer: ≈ 1 µs with
# OpenMP's spinning threads, more when a thread has to be woken. A frame whose convolution and mixing
# are small, B · K_t · d · (L + d) (the products' multiply-adds plus the mixing's weights, per layer)
# below these, runs them on the calling thread instead, at the single-thread kernel's speed. Two
# splits, two thresholds: the filter channels (B < 4 threads; each task also sums a partial mixing
# output) and the streams (B >= 4 threads). From the crossovers measured with
# `python bench/threads_sweep.py --paper` (docs/PERFORMANCE.md "Threads": edge, native and
# AVX2-emulated; channel split: loses at <= 197k on both builds (B=4 K=4), gains from 295k;
# stream split: gains from 98k, B=8 K=1, the smallest measured). Kept here, not in the kernel
# modules: a new value must not change the kernels' cache key.
PARALLEL_MIN_WORK_CHANNELS = 250_000
PARALLEL_MIN_WORK_STREAMS = 50_000


def parallel_min_work() -> tuple[int, int]:
    """(channel split, stream split) work below which a threads=N engine steps a frame's layers on
    one thread; $ESSM_PARALLEL_MIN_WORK overrides both (0: always split; measurements, tests)."""
    import os
    env = os.environ.get("ESSM_PARALLEL_MIN_WORK")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n < 0:
            raise ConfigError(f"ESSM_PARALLEL_MIN_WORK must be an integer >= 0, got {env!r}")
        return n, n
    return PARALLEL_MIN_WORK_CHANNELS, PARALLEL_MIN_WORK_STREAMS


_layer_checked = []


def _check_threading_layer() -> None:
    """Start numba's thread pool (once per process) and warn when its layer is 'workqueue': numba's
    fallback without OpenMP or TBB, whose fork and join cost ≈ 80 µs here (OpenMP ≈ 1.3 µs), more
    than a split step saves (docs/PERFORMANCE.md "Threads")."""
    if _layer_checked:
        return
    _layer_checked.append(True)
    import numba
    from numba.np.ufunc import parallel as _par
    try:
        _par._launch_threads()
        layer = numba.threading_layer()
    except Exception as e:   # (private API: a numba that moved it only loses the warning)
        log.debug("could not tell numba's threading layer: %r", e)
        return
    if layer == "workqueue":
        log.warning("numba's threading layer is 'workqueue' (no OpenMP or TBB found): every split step pays "
                    "≈ 80 µs to fork and join, more than threads > 1 saves; install libgomp or tbb, or use threads=1")


def _max_threads() -> int:
    """The most threads an engine may use: numba's thread pool (NUMBA_NUM_THREADS, default the CPU count)."""
    import numba
    return int(numba.config.NUMBA_NUM_THREADS)


class _BackgroundCompile:
    """Compile (or load from the disk cache) one kernel for exactly the engine's argument types, in a
    daemon thread. numba's compilation is Python holding the GIL most of the time (LLVM's part runs
    without it): the thread takes CPU from the process, not from the process's total. A kernel in
    the disk cache is loaded by _load_cached (numba's cache branch without its registry refresh);
    `before_compile` runs only when the kernel has to be compiled."""

    def __init__(self, dispatcher, args, blas: bool = True, before_compile=None):
        import numba
        self.dispatcher = dispatcher
        self.blas = blas                  # does the kernel call BLAS (numba's np.dot)? then limit its threads first
        self.before_compile = before_compile
        self.sig = tuple(numba.typeof(a) for a in args)   # the types every engine call passes
        self.done = threading.Event()
        self.error: BaseException | None = None
        self.cpu_s = self.wall_s = None
        self.source = None               # "compiled", "cache" (the disk cache) or "memory" (this process had it)
        self.thread = threading.Thread(target=self._run, name="essm-stream-compile", daemon=True)
        self.thread.start()

    def _run(self) -> None:
        import time
        c0, w0 = time.thread_time(), time.perf_counter()
        try:
            with _fewer_gc_passes():
                self._compile()
        except BaseException as e:        # kept for wait_compiled / the engine's log
            self.error = e
        finally:
            self.cpu_s, self.wall_s = time.thread_time() - c0, time.perf_counter() - w0
            self.done.set()

    def _compile(self) -> None:
        if self.blas:
            limit_blas_threads()          # before the compiled kernel's first GEMM
        d = self.dispatcher
        self.source = _load_cached(d, self.sig)
        if self.source is not None:
            return
        had = self.sig in d.overloads   # (without a disk cache _load_cached does not look)
        if self.before_compile is not None and not had:
            self.before_compile()
        hits0 = d.stats.cache_hits.get(self.sig, 0)
        d.compile(self.sig)
        self.source = "memory" if had else "cache" if d.stats.cache_hits.get(self.sig, 0) > hits0 else "compiled"


def _import_reference_deps() -> None:
    """What the numpy reference kernel imports on its first step (its GELU's scipy.special)."""
    import importlib
    importlib.import_module("scipy.special")


def _load_cached(dispatcher, sig) -> str | None:
    """Load the kernel for `sig` from numba's disk cache as Dispatcher.compile(sig) does, without the
    `targetctx.refresh()` numba's Cache.load_overload runs first: that refresh installs every lowering
    registry (numba.np.arraymath, linalg, random, typed containers, cffi; numba.np.arraymath imports
    scipy.linalg, whose array-API layer imports numpy.f2py, numpy.testing, ...), which a compile
    needs and machine code loaded from the cache does not: ≈ 0.45 s of a warm start's ≈ 1 s on the
    Intel box of docs/PERFORMANCE.md "Session 13". What the loaded code does need is kept: numba's
    compiler lock, the NRT (which the refresh would start: rtsys.initialize), the index key with
    the machine and source check (Cache._load_overload), the user-function entry and the overload.
    Any later compile runs numba's own path, refresh included. Returns "memory" (this process had the
    overload) or "cache"; None (nothing changed) when the cache has no entry for `sig`, there is no
    disk cache, or this numba lacks these internals (then the caller compiles with
    dispatcher.compile, which loads from the cache the usual way). Like Dispatcher.compile, it waits
    for numba's compiler lock first, even for an overload in memory."""
    try:
        from numba.core.compiler_lock import global_compiler_lock
        from numba.core.runtime import rtsys
        cache, ctx = dispatcher._cache, dispatcher.targetctx
        load, guard, hits = cache._load_overload, cache._guard_against_spurious_io_errors, dispatcher._cache_hits
    except (AttributeError, ImportError):   # NullCache (no disk cache) has no _load_overload
        return None
    with global_compiler_lock:
        if sig in dispatcher.overloads:
            return "memory"
        rtsys.initialize(ctx)     # (idempotent; the compiled code allocates through the NRT's functions)
        try:
            with guard():
                cres = load(sig, ctx)
        except Exception as e:    # (dispatcher.compile then loads or compiles it the usual way and says what fails)
            log.debug("loading %r from numba's cache failed (%r): compiling", dispatcher, e)
            return None
        if cres is None:
            return None
        hits[sig] += 1
        if not cres.objectmode:
            ctx.insert_user_function(cres.entry_point, cres.fndesc, [cres.library])
        dispatcher.add_overload(cres)
    return "cache"


# While a kernel compiles, Python's cyclic garbage collector runs its first generation every 700 net
# allocations and, at the default thresholds, 9 full passes over the whole heap (numba, SciPy, ONNX
# Runtime: ~10^6 objects) during the demo's compile; with the first generation at 10000 it runs 1.
# Garbage is still collected (numba's IR cycles, ~560k objects, live a little longer: ~20 MB more peak
# memory). docs/PERFORMANCE.md "Start-up" has the measurement. Process-wide, so counted: the
# thresholds come back when the last compile ends, unless someone else changed them meanwhile.
COMPILE_GC_THRESHOLD0 = 10000
_gc_state = {"n": 0, "saved": None, "ours": None}
_gc_lock = threading.Lock()


class _fewer_gc_passes:
    """Context: the collector's first-generation threshold at least COMPILE_GC_THRESHOLD0 inside."""

    def __enter__(self):
        import gc
        with _gc_lock:
            if _gc_state["n"] == 0:
                saved = gc.get_threshold()
                ours = (max(saved[0], COMPILE_GC_THRESHOLD0),) + tuple(saved[1:])
                gc.set_threshold(*ours)
                _gc_state["saved"], _gc_state["ours"] = saved, ours
            _gc_state["n"] += 1
        return self

    def __exit__(self, *exc):
        import gc
        with _gc_lock:
            _gc_state["n"] -= 1
            if _gc_state["n"] == 0 and gc.get_threshold() == _gc_state["ours"]:
                gc.set_threshold(*_gc_state["saved"])
        return False


def warmup(dtypes=(np.float32, np.float64)) -> dict:
    """Compile the kernels for the given dtypes on a tiny program; the disk cache then serves every
    later process (kernels do not depend on sizes). float32 has three: the one-stream kernels
    (B = 1 with d_model at least the convolution tile's narrow width: kernels.stream_run_fir_one_narrow
    for the small windows of simd.SMALL_MIN … SMALL_MAX columns, the demo's d = 32, kernels.stream_run_fir_one
    for the others, the edge config's) and the general one (B > 1, and B = 1 where the one-stream kernels
    do not apply). Returns seconds per dtype."""
    import time
    from .config import ESSMConfig
    from .simd import SMALL_MIN, TILE_COLS
    cfg = ESSMConfig(d_in=2, d_out=2, d_model=max(4, SMALL_MIN), n_layers=1, seq_len=4, k_max=2, d_gate=2,
                     head="mean", pool_window=2)
    prog = tiny_program(cfg)
    # (float32, one stream: the kernel for small windows, SMALL_MIN <= d_model <= SMALL_MAX, and the one for others)
    wide = tiny_program(ESSMConfig(d_in=2, d_out=2, d_model=max(4, TILE_COLS), n_layers=1, seq_len=4, k_max=2,
                                   d_gate=2, head="mean", pool_window=2))
    times = {}
    for dt in dtypes:
        t0 = time.perf_counter()
        for p, batch in (((prog, 1), (wide, 1), (prog, 2)) if np.dtype(dt) == np.float32 else ((prog, 1),)):
            StreamEngine(p, batch=batch, dtype=dt).warmup()
        times[np.dtype(dt).name] = time.perf_counter() - t0
    return times


def tiny_program(cfg, seed: int = 0) -> StreamProgram:
    """A random program of the given config without torch (for warmup, tests and benchmarks)."""
    rng = np.random.default_rng(seed)
    arrays = {}
    for name, shape in _lo.program_shapes(cfg).items():
        scale = 1.0 / np.sqrt(shape[-1]) if len(shape) >= 2 else 0.1
        arrays[name] = rng.standard_normal(shape) * scale
    arrays["sigma"] = np.abs(arrays["sigma"]) + 0.1
    for g in ("ln1.g", "ln2.g", "ln_f.g"):
        if g in arrays:
            arrays[g] = 1.0 + 0.1 * arrays[g]
    return StreamProgram(cfg, arrays, provenance={"source_checkpoint": None})
