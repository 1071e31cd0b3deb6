"""Every numba setting of the package in one place (STYLE.md §5).

Kernels are compiled with `njit` from here: no Python objects, no bounds checks, fastmath (the
kernels reassociate dot products; tolerances in tests account for it), and an on-disk cache so
that the second process that starts an engine does not pay the compile again.

Cache directory, one place (next to the Hankel filter cache): NUMBA_CACHE_DIR when set, else
`$XDG_CACHE_HOME/essm-stream/numba` (default `~/.cache/essm-stream/numba`), else, when the home
cache cannot be created, `<tmp>/essm-stream-numba-<uid>`. numba unpickles its cache index files,
so a directory this module picks must be a real directory (not a symlink) owned by this user and
not writable by group or others; one that is not is refused with a warning, and when no directory
passes, kernels compile in every process (no disk cache) rather than load another user's files.
`NUMBA_DISABLE_JIT=1` turns every kernel into plain Python (tests run that way too).

Inside that directory the kernels live in a subdirectory named by a hash of the kernel sources
(KERNEL_SOURCES) and the numba version. numba invalidates a cached function only when its own file
changes, but `stream_run` in kernels.py inlines the ops of kernels_lds.py / kernels_lru.py and
freezes layout.py's offsets as constants: after an upgrade that edits only one of those, its old
machine code would load and index the weights wrongly. A new hash gives a fresh cache instead.

Old keyed subdirectories (an earlier install's kernels) would pile up: at start-up the current one
is touched (its mtime says "in use") and `prune_stale` removes sibling subdirectories of our own
naming (16 hex digits; `essm-` + 16 hex digits inside a user's NUMBA_CACHE_DIR) that no process has
started from for STALE_AFTER_S (a day), never anything else, never a symlink or another user's
directory. A process of an older install that is still running keeps working if its directory goes:
its kernels are in memory, and numba recreates the directory for anything it compiles later.
"""
from __future__ import annotations

import functools
import logging
import os
import re
import shutil
import stat
import tempfile
import time

log = logging.getLogger(__name__)

FASTMATH = True        # reassociation lets LLVM vectorize the dot-product reductions
CACHE = True           # compiled machine code cached on disk, keyed by signature and CPU
BOUNDSCHECK = False    # the Python wrappers validate shapes; kernels index without checks
NOGIL = True           # a controller thread may run beside the engine
ERROR_MODEL = "numpy"  # no ZeroDivisionError checks in hot loops
# numba builds, by default, a C-callable wrapper of every compiled function for first-class function
# values (`cfunc`-style calls through a pointer); no kernel is ever passed around that way, and each
# wrapper is LLVM IR to optimise and turn into machine code on a cold start (≈ 0.5 s of the demo's
# 6-7 s compile, docs/PERFORMANCE.md "Start-up"). The CPython wrapper stays: tests and the engine
# call kernels from Python.
NO_CFUNC_WRAPPER = True


def _uid() -> int | None:
    return os.getuid() if hasattr(os, "getuid") else None


def safe_cache_dir(path: str) -> str | None:
    """Create `path` (mode 0700) if missing; return why it must not hold a cache, or None if it may:
    a symlink, not a directory, owned by another user, writable by group / others, or unwritable."""
    try:
        os.makedirs(path, mode=0o700, exist_ok=True)
        st = os.lstat(path)
    except OSError as e:
        return f"cannot create it ({e.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "it is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "it is not a directory"
    uid = _uid()
    if uid is not None and st.st_uid != uid:
        return f"it is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if uid is not None and st.st_mode & 0o022:
        return f"its mode {stat.S_IMODE(st.st_mode):04o} lets others write in it"
    if not os.access(path, os.W_OK | os.X_OK):
        return "it is not writable"
    return None


L2_DEFAULT = 1 << 20   # (L2 per core where sysfs does not say: Zen 4 / 5, recent Intel cores have 1-2 MB)


@functools.lru_cache(maxsize=1)
def l2_bytes() -> int:
    """This CPU's L2 per core in bytes (Linux sysfs, cpu0's level-2 data or unified cache), else L2_DEFAULT."""
    base = "/sys/devices/system/cpu/cpu0/cache"
    try:
        for name in sorted(os.listdir(base)):
            def read(f):
                with open(os.path.join(base, name, f)) as fh:
                    return fh.read().strip()
            if name.startswith("index") and read("level") == "2" and read("type") in ("Data", "Unified"):
                size = read("size").upper()
                mult = {"K": 1 << 10, "M": 1 << 20}.get(size[-1:], 1)
                return int(size.rstrip("KM")) * mult
    except (OSError, ValueError):
        pass
    return L2_DEFAULT


@functools.lru_cache(maxsize=1)
def cpu_vendor() -> str:
    """cpu0's vendor_id in /proc/cpuinfo ("AuthenticAMD", "GenuineIntel", ...); without /proc (Windows:
    platform.processor() names it, "AMD64 Family 25 Model 97 Stepping 2, AuthenticAMD") the name found
    there; "" where neither says (macOS, ARM Linux)."""
    try:
        with open("/proc/cpuinfo") as fh:
            for line in fh:
                if line.startswith("vendor_id"):
                    return line.split(":", 1)[1].strip()
                if not line.strip():
                    break
        return ""
    except OSError:
        pass
    import platform
    proc = platform.processor() or ""
    return next((v for v in ("AuthenticAMD", "GenuineIntel") if v in proc), "")


# Every module whose code or constants end up inside a cached kernel.
KERNEL_SOURCES = ("kernels.py", "kernels_lds.py", "kernels_lru.py", "layout.py", "numba_config.py", "gemv.py",
                  "simd.py")


def kernel_source_key() -> str:
    """Short hash of the kernel sources and the numba version: the cache subdirectory's name.
    (numba.__version__, not importlib.metadata: that scans every installed distribution, ≈ 30 ms
    of each start; numba is imported here anyway, and its CACHE_DIR is set after the import.)"""
    import hashlib

    import numba

    h = hashlib.sha256()
    h.update(str(numba.__version__).encode())
    here = os.path.dirname(os.path.abspath(__file__))
    # the convolution tile's shape is a constant of the machine code: an explicit $ESSM_CONV_TILE
    # (measurements) must not load kernels compiled for another shape
    h.update(b"tile\0" + os.environ.get("ESSM_CONV_TILE", "").encode())
    # so is the convolution's software prefetch of the mixing weights ($ESSM_PREFETCH, prefetch()) and
    # the L2 size its rule reads (prefetch_bytes())
    h.update(b"prefetch\0" + os.environ.get("ESSM_PREFETCH", "").encode() + b"\0" + str(l2_bytes()).encode())
    # and the streamed mixing's threshold (stream_step_min: $ESSM_STREAM_MIX, the CPU's vendor)
    h.update(b"stream\0" + os.environ.get("ESSM_STREAM_MIX", "").encode() + b"\0" + cpu_vendor().encode())
    for name in KERNEL_SOURCES:
        try:
            with open(os.path.join(here, name), "rb") as f:
                h.update(name.encode() + b"\0" + f.read())
        except OSError:
            h.update(name.encode() + b"\0missing")
    return h.hexdigest()[:16]


def cache_dir(environ=None, tmpdir: str | None = None) -> str | None:
    """Directory numba caches compiled kernels in (decided once, before any kernel is defined), or
    None when no safe directory exists (then kernels are compiled per process)."""
    env = os.environ if environ is None else environ
    key = kernel_source_key()
    if env.get("NUMBA_CACHE_DIR"):
        # the user's explicit choice is taken as is (no safety check), keyed like ours. A child
        # process inherits the keyed directory its parent exported (the user's, essm-<key>, or our
        # default, <key>) and keeps it: nesting another one inside would compile every kernel again
        user = env["NUMBA_CACHE_DIR"]
        inherited = os.path.basename(os.path.normpath(user)) in (key, f"essm-{key}")
        return user if inherited else os.path.join(user, f"essm-{key}")
    base = env.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    tmp = tmpdir or tempfile.gettempdir()
    for cand in (os.path.join(base, "essm-stream", "numba"),
                 os.path.join(tmp, f"essm-stream-numba-{_uid() if _uid() is not None else 0}")):
        why = safe_cache_dir(cand) or safe_cache_dir(os.path.join(cand, key))
        if why is None:
            return os.path.join(cand, key)
        log.warning("not caching numba kernels in %s: %s", cand, why)
    log.warning("no safe numba cache directory: kernels compile in every process (set NUMBA_CACHE_DIR)")
    return None


STALE_AFTER_S = 24 * 3600     # a keyed cache no process has started from for a day is stale
_OURS = re.compile(r"[0-9a-f]{16}")
_OURS_IN_USER_DIR = re.compile(r"essm-[0-9a-f]{16}")


def prune_stale(current: str, max_age_s: float = STALE_AFTER_S, now: float | None = None) -> list[str]:
    """Mark `current` (a keyed cache directory) as in use and remove its stale siblings: directories
    named like ours (16 hex digits, or essm-<16 hex> when the parent is a user's NUMBA_CACHE_DIR),
    owned by this user, not symlinks, whose mtime is older than max_age_s. Each is renamed away
    first (a process that starts meanwhile makes a fresh one rather than reading a half-deleted
    one). Returns the names removed; errors are logged, never raised (a cache is an optimisation)."""
    now = time.time() if now is None else now
    parent, mine = os.path.split(os.path.normpath(current))
    pattern = _OURS_IN_USER_DIR if mine.startswith("essm-") else _OURS
    try:
        os.utime(current)                          # in use now (loading cached kernels writes nothing)
        entries = list(os.scandir(parent))
    except OSError as e:
        log.debug("not pruning the numba cache in %s: %s", parent, e)
        return []
    removed = []
    for e in entries:
        if e.name == mine or not pattern.fullmatch(e.name):
            continue
        try:
            st = e.stat(follow_symlinks=False)
            if not stat.S_ISDIR(st.st_mode) or (_uid() is not None and st.st_uid != _uid()):
                continue
            if now - st.st_mtime < max_age_s:
                continue
            doomed = os.path.join(parent, f".{e.name}.stale-{os.getpid()}")
            os.rename(e.path, doomed)
        except OSError:
            continue                               # gone already, or not ours to move
        shutil.rmtree(doomed, ignore_errors=True)
        removed.append(e.name)
    if removed:
        log.info("removed %d stale numba cache director%s in %s (unused for %.0f h): %s", len(removed),
                 "y" if len(removed) == 1 else "ies", parent, max_age_s / 3600, ", ".join(removed))
    return removed


_CACHE_DIR = cache_dir()
if _CACHE_DIR is not None:
    os.environ["NUMBA_CACHE_DIR"] = _CACHE_DIR   # read by numba's config (and by child processes)

import numba  # noqa: E402  (imported by kernel_source_key already; its config takes the dir below)

if _CACHE_DIR is not None:
    numba.config.CACHE_DIR = _CACHE_DIR          # numba read NUMBA_CACHE_DIR at its import, before we set it
    if os.path.isdir(_CACHE_DIR):
        prune_stale(_CACHE_DIR)

JIT_DISABLED = bool(int(os.environ.get("NUMBA_DISABLE_JIT", "0") or 0))


def njit(fn=None, **overrides):
    """numba.njit with the package's settings; `@njit` or `@njit(inline="always")`."""
    opts = dict(fastmath=FASTMATH, cache=CACHE and _CACHE_DIR is not None, boundscheck=BOUNDSCHECK, nogil=NOGIL,
                error_model=ERROR_MODEL, no_cfunc_wrapper=NO_CFUNC_WRAPPER)
    opts.update(overrides)
    if fn is None:
        return lambda f: numba.njit(**opts)(f)
    return numba.njit(**opts)(fn)


# The kernels' largest product (the convolution of every stream's window, kernels.convolve) is an
# np.dot call that numba hands to SciPy's BLAS (scipy.linalg.cython_blas). A multi-threaded BLAS inside a step that runs
# beside other work is a hazard, not a speed-up: measured here with 2 OpenBLAS threads and the other
# core busy, one (32 × 128)·(128 × 2048) product took 4.2 ms instead of 0.21 ms. The engine is a
# single-thread kernel (a controller thread may run beside it), so its BLAS runs on one thread.
BLAS_THREADS = 1
_blas_limited = False


def limit_blas_threads(n: int = BLAS_THREADS) -> bool:
    """Limit the BLAS that numba's np.dot calls (SciPy's) to n threads, once per process; numpy's own
    BLAS (a separate library in wheels) is left alone. Respects an explicit OPENBLAS_NUM_THREADS.
    Returns whether a limit is in place."""
    global _blas_limited
    if _blas_limited or os.environ.get("OPENBLAS_NUM_THREADS"):
        return True
    if os.environ.get("OPENBLAS_CORETYPE"):   # said once per process (info: set on purpose, it is no error)
        log.info("OPENBLAS_CORETYPE=%s forces OpenBLAS's kernels for that core: the engine's convolution "
                    "(numba's np.dot) may run several times slower than with this CPU's own kernels "
                    "(docs/PERFORMANCE.md); unset it unless it is needed", os.environ["OPENBLAS_CORETYPE"])
    try:
        import scipy
        import scipy.linalg.cython_blas  # noqa: F401  (load the library numba will call)
        from threadpoolctl import ThreadpoolController
    except ImportError as e:   # pragma: no cover - both are runtime dependencies
        log.warning("cannot limit the kernels' BLAS threads (%s)", e)
        return False
    here = os.path.dirname(os.path.abspath(scipy.__file__))
    ctl = ThreadpoolController().select(user_api="blas")
    mine = [c for c in ctl.lib_controllers if os.path.abspath(c.filepath).startswith((here + os.sep, here + ".libs"))]
    for c in mine:
        c.set_num_threads(n)
    if not mine:
        log.debug("no SciPy BLAS library found to limit to %d threads", n)
    _blas_limited = True   # (tried once; nothing to limit when SciPy links another BLAS)
    return bool(mine)


# The convolution's products run the register-tiled micro-kernel (simd.conv_product), BLAS (numba's
# np.dot: SciPy's OpenBLAS) only where conv_small_rows says so (and for what kernels._use_tile leaves
# it: windows narrower than a tile, a long window's one-row product). Measured (docs/PERFORMANCE.md
# "A register-tiled convolution"): on edge's window (L = 128, 64 columns, 32 KB, bench/conv_tile.py)
# the tile beats sgemm at every K, with OpenBLAS's SkylakeX kernels (AVX-512, 4 × 64 tile: 230-270
# GFLOP/s against 165-245) and its Haswell ones (AVX2, 4 × 16: 113-118 against 21-77); on the paper
# config's (L = 1024, 256 columns, 1 MB) inside the engine (bench/profile_ops.py --config paper, K = 32)
# the convolution took 897 µs against sgemm's 1142 natively, 1266 against 1701 under AVX2 emulation.


@functools.lru_cache(maxsize=64)
def conv_small_rows(k_max: int = 1 << 30) -> int:
    """Up to how many filter rows the convolution runs its register tile instead of sgemm (1: sgemm
    for every product, and no tile compiled): max(k_max, 2), every product.
    $ESSM_CONV_SMALL_ROWS overrides (tests, measurements)."""
    env = os.environ.get("ESSM_CONV_SMALL_ROWS")
    if env:
        try:
            n = int(env)
        except ValueError:
            n = 0
        if n < 1:
            raise ValueError(f"ESSM_CONV_SMALL_ROWS must be an integer >= 1, got {env!r}")
        return n
    return max(int(k_max), 2)


@functools.lru_cache(maxsize=1)
def half_widening() -> bool:
    """Does the machine code numba makes here widen float16 to float32 in hardware? (x86 with F16C,
    which every AVX2 CPU has; ARMv8.) A program with mix_weights="fp16" mixes from its float16 copy
    of Mcat only then; elsewhere LLVM would call a soft-float routine per weight, and the engine
    mixes the same (float16-rounded) values from the float32 Mcat instead. $ESSM_MIX16=0 / 1
    overrides (measurements, tests)."""
    env = os.environ.get("ESSM_MIX16")
    if env in ("0", "1"):
        return env == "1"
    import platform
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return True
    if machine not in ("x86_64", "amd64"):
        return False
    from numba.core import config
    name = (config.CPU_NAME or "host").lower()
    feats = config.CPU_FEATURES
    if feats:                                  # explicit feature string (numba's NUMBA_CPU_FEATURES)
        return "+f16c" in feats.split(",")
    if name == "host":
        import llvmlite.binding as llvm
        return bool(llvm.get_host_cpu_features().get("f16c", False))
    # a named CPU (NUMBA_CPU_NAME, e.g. the AVX2 emulation's haswell): F16C from Ivy Bridge / Bulldozer on
    return name not in ("generic", "x86-64", "core2", "nehalem", "westmere", "sandybridge", "corei7",
                        "corei7-avx", "atom", "bonnell", "silvermont", "btver1", "amdfam10", "k8")


def simd_target() -> tuple[int, int]:
    """(bytes per vector register, number of vector registers) of the ISA numba compiles for: numba's
    target CPU (NUMBA_CPU_NAME / NUMBA_CPU_FEATURES when set, else the host's), not the host's cpuid.
    x86: AVX-512F (64, 32), AVX (32, 16), else SSE (16, 16); aarch64: NEON (16, 32); others (16, 16)."""
    import platform
    machine = platform.machine().lower()
    if machine in ("aarch64", "arm64"):
        return 16, 32
    if machine not in ("x86_64", "amd64"):
        return 16, 16
    from numba.core import config
    name = (config.CPU_NAME or "host").lower()
    feats = config.CPU_FEATURES
    if feats:                                  # an explicit feature string wins (numba passes it to LLVM)
        on = {f[1:] for f in feats.split(",") if f.startswith("+")}
    elif name == "host":
        import llvmlite.binding as llvm
        on = {k for k, v in llvm.get_host_cpu_features().items() if v}
    else:                                      # a named CPU: LLVM's feature set of that name
        avx512 = ("skylake-avx512", "cascadelake", "cooperlake", "cannonlake", "icelake-client",
                  "icelake-server", "tigerlake", "rocketlake", "sapphirerapids", "graniterapids",
                  "emeraldrapids", "znver4", "znver5", "knl", "knm", "x86-64-v4")
        avx = ("sandybridge", "ivybridge", "corei7-avx", "core-avx-i", "core-avx2", "haswell", "broadwell",
               "skylake", "alderlake", "raptorlake", "meteorlake", "gracemont", "znver1", "znver2", "znver3",
               "bdver1", "bdver2", "bdver3", "bdver4", "btver2", "x86-64-v3")
        on = {"avx512f", "avx"} if name in avx512 else {"avx"} if name in avx else set()
    if "avx512f" in on:
        return 64, 32
    if "avx" in on:
        return 32, 16
    return 16, 16


# The convolution's register tile (simd.conv_product): R rows × NV vectors of VW float32 lanes, R · NV
# accumulators, for the vector registers of simd_target(). Measured (docs/PERFORMANCE.md "A register-
# tiled convolution"): AVX-512 4 × (4 × 16); AVX2 6 × (2 × 8) (12 accumulators of its 16 registers, the
# last rows in 4-row tiles: simd.row_tile; it was 4 × (2 × 8) before session 11, docs/PERFORMANCE.md).
_TILES = {(64, 32): (4, 4, 16), (32, 16): (6, 2, 8), (16, 32): (4, 4, 4), (16, 16): (4, 2, 4)}


def conv_tile() -> tuple[int, int, int]:
    """(R, NV, VW) of the convolution's tile for this target. $ESSM_CONV_TILE="RxNVxVW" overrides
    (measurements; it is part of the kernel cache's key)."""
    env = os.environ.get("ESSM_CONV_TILE")
    if env:
        try:
            R, NV, VW = (int(x) for x in env.lower().split("x"))
        except ValueError:
            R = NV = VW = 0
        if not (1 <= R <= 16 and 1 <= NV <= 16 and VW in (2, 4, 8, 16, 32)):
            raise ValueError(f"ESSM_CONV_TILE must be RxNVxVW (rows, vectors, float32 lanes), e.g. 4x2x8; got {env!r}")
        return R, NV, VW
    return _TILES.get(simd_target(), (4, 2, 4))


# Software prefetch of a layer's mixing weights while its convolution computes (simd.conv_product's
# tile issues `lines` prefetches per step of τ, `llvm.prefetch` with LLVM's locality `hint`: 3 =
# prefetcht0, 2 = prefetcht1 (into L2 on Zen 4 and later, and on Intel), 1 = prefetcht2, 0 = prefetchnta).
# Measured in docs/PERFORMANCE.md "Prefetching the mixing weights during the convolution".
PREFETCH_DEFAULT = (4, 2)
# AVX2 targets: 2 lines a step. The 6-row tile's steps are longer and its product slower, and 4 lines a
# step slowed the convolution more than they gained the mixing. Edge K=32, emulated: 38.5-39.8 µs against
# 40.2-40.7 with 4 (natively no difference: 4 stays); docs/PERFORMANCE.md "Session 11".
PREFETCH_DEFAULT_AVX2 = (2, 2)


STREAM_NEVER = 1 << 62   # (stream_step_min: more bytes than any step reads)


def stream_step_min() -> int:
    """The least bytes of all layers' active mixing weights in a step from which the one-stream step streams
    them through L1 (kernels._streams_mix, gemv.gemv_stream's non-temporal prefetch) instead of reading them
    through L2.

    Only on AMD CPUs (cpu_vendor), where it was measured to pay (Zen 5, 1 MB L2): the L2 and a quarter (edge
    K >= 19), and 0 (every budget) on AVX2 targets. There, at small budgets, the weights the step reads (edge
    K=4: ≈ 0.6 MB) and its windows stay in L2 only when Mcat does not pass through it: edge K=4 9.6 -> 9.2
    µs, K=16 25.3 -> 24.5 under the AVX2 emulation, natively no gain (docs/PERFORMANCE.md "Session 12").

    Elsewhere never (STREAM_NEVER). On an Intel Xeon (Sapphire / Emerald Rapids class, 2 MB L2, a
    non-inclusive L3) a line that prefetchnta brought into L1 is not kept in L2 nor in L3 when L1 evicts it:
    streamed weights came back (most likely) from DRAM in the next step, slower than the L3 reads of weights
    read through L2 (bench/stream_policy.py: a 2.5 MB cyclic GEMV 67 µs read through L2, 127-177 µs
    streamed), and the edge step under the AVX2 rule (stream at every budget) took about twice as long (K=4
    35.9 -> 19.3 µs, K=32 199 -> 121 never streamed). Keeping part of Mcat resident and streaming the rest (a
    per-layer split by the L2's size) did not help either: every streamed byte costs more than the L2
    misses it saves (docs/PERFORMANCE.md "Session 13").
    The decision is the cache hierarchy's, not its sizes': where non-temporal lines go after L1.
    $ESSM_STREAM_MIX overrides (tests, measurements; part of the kernel cache's key): "never", "always"
    (every budget) or a number of bytes."""
    env = os.environ.get("ESSM_STREAM_MIX")
    if env:
        if env in ("never", "always"):
            return STREAM_NEVER if env == "never" else 0
        try:
            n = int(env)
        except ValueError:
            n = -1
        if n < 0:
            raise ValueError(f"ESSM_STREAM_MIX must be never, always or a number of bytes >= 0, got {env!r}")
        return n
    if cpu_vendor() != "AuthenticAMD":
        return STREAM_NEVER
    return 0 if simd_target() == (32, 16) else l2_bytes() * 5 // 4


def prefetch_default() -> tuple[int, int]:
    """(lines, hint) of the convolution's prefetch without $ESSM_PREFETCH, for numba's target ISA."""
    return PREFETCH_DEFAULT_AVX2 if simd_target() == (32, 16) else PREFETCH_DEFAULT
def prefetch_bytes() -> tuple[int, int]:
    """When the convolution prefetches a layer's mixing weights (kernels._prefetch_pays): (the least
    bytes all layers' mixing weights read in a step, the most bytes of one layer's it prefetches).
    Below the first (half the L2) they stay in L2 from one step to the next: nothing to fetch, the
    prefetches cost instructions only (edge K=4: 3-7 % slower with them); past the second (the L2)
    the prefetched lines do not last until the mixing reads them: a layer's weights of up to twice
    that are prefetched up to it, larger ones (the paper config's 8.6 MB: 6-18 % slower with the
    traffic from DRAM) not at all. docs/PERFORMANCE.md "Prefetching the mixing weights"."""
    return l2_bytes() // 2, l2_bytes()


@functools.lru_cache(maxsize=1)
def prefetch() -> tuple[int, int]:
    """(lines per step of τ, locality hint) of the convolution's prefetch of the mixing weights; (0, hint):
    none (no prefetch instruction compiled). $ESSM_PREFETCH="N" or "N,HINT" overrides (N 0 … 8, HINT
    0 … 3; measurements; part of the kernel cache's key); "0" turns it off."""
    env = os.environ.get("ESSM_PREFETCH")
    if not env:
        return prefetch_default()
    try:
        parts = [int(x) for x in env.split(",")]
    except ValueError:
        parts = []
    if len(parts) == 1:
        parts.append(prefetch_default()[1])
    if len(parts) != 2 or not (0 <= parts[0] <= 8 and 0 <= parts[1] <= 3):
        raise ValueError(f"ESSM_PREFETCH must be N or N,HINT (lines per step 0-8, locality 0-3), e.g. 2 or 2,2; got {env!r}")
    return parts[0], parts[1]


def window_prefetch_min() -> int:
    """The least bytes of a step's windows (every layer's, every stream's) from which a batch's convolution
    prefetches the next history block's window during a block's product (kernels.convolve_small): half the
    L2. Below it the windows stay in L2 from one step to the next and the prefetches would cost instructions
    only; above it each block's window comes from L3 (edge B=32: 4 MB of windows a step, beside 2.2 MB of
    mixing weights, in a 1 or 2 MB L2). A block's window (edge: 32 KB) is far smaller than either L2, so
    the prefetched lines last until the next product reads them. docs/PERFORMANCE.md "Session 13: the
    batched step on the Intel box"."""
    return l2_bytes() // 2
