"""essm-stream warmup: compile the numba kernels into the on-disk cache and time cold/warm starts.

An engine compiles only its own dtype, lazily, on its first step (a float32 program never pays for
float64); `warmup` compiles both by default so that any later engine loads from the cache. Start
times are reported as wall and CPU seconds (CPU seconds are what a loaded machine does not inflate).
`essm-stream bench --targets` measures the cold and warm start of `essm-stream demo --fast`."""
HELP = "compile the engine kernels into numba's disk cache (do it once after install) and time starts"


def add_arguments(p):
    from essm_stream.commands._args import choice_list

    p.add_argument("--dtype", type=choice_list(("float32", "float64")), default="float32,float64",
                   help="comma-separated engine dtypes to compile")
    p.add_argument("--program", help="also time constructing an engine on this program and its first step")
    p.add_argument("--measure", action="store_true",
                   help="measure start times in fresh processes: cold (empty cache dir) and warm (cache filled)")


def start_times(program: str | None = None, dtype: str = "float32") -> dict:
    """Seconds from a fresh interpreter to the first output: cold (empty numba cache) and warm."""
    import os
    import resource
    import subprocess
    import sys
    import tempfile
    import time

    code = ("import time, sys; t0 = time.perf_counter(); import numpy as np; "
            "from essm_stream.engine import StreamEngine, tiny_program; from essm_stream.program import StreamProgram; "
            "from essm_stream.config import ESSMConfig; t1 = time.perf_counter(); "
            f"p = StreamProgram.load({program!r}) if {program!r} else tiny_program(ESSMConfig(d_in=4, d_out=2)); "
            f"e = StreamEngine(p, dtype=np.{dtype}); e.step(np.zeros(p.d_in, np.{dtype}), 1); t2 = time.perf_counter(); "
            "print(t1 - t0, t2 - t1)")
    out = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, env in (("cold", dict(os.environ, NUMBA_CACHE_DIR=tmp)), ("warm", dict(os.environ, NUMBA_CACHE_DIR=tmp))):
            t = time.perf_counter()
            r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
            r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
            r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
            total = time.perf_counter() - t
            cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
            if r.returncode != 0:
                raise RuntimeError(r.stderr[-2000:])
            imp, first = (float(v) for v in r.stdout.split()[-2:])
            out[name] = {"process_s": total, "cpu_s": cpu, "import_s": imp, "first_step_s": first}
    return out


def run(a):
    import numpy as np

    from essm_stream import numba_config
    from essm_stream.commands._args import check_inputs
    from essm_stream.engine import warmup, StreamEngine
    from essm_stream.program import StreamProgram
    import time

    check_inputs(("--program", a.program))
    dtypes = a.dtype
    print(f"numba cache dir: {numba_config._CACHE_DIR or 'none (no safe directory: kernels compile per process)'}")
    for name, sec in warmup([getattr(np, d) for d in dtypes]).items():
        print(f"kernels for {name}: ready in {sec:.2f} s (compiled, or loaded from the cache)")
    if a.program:
        prog = StreamProgram.load(a.program)
        for d in dtypes:
            t = time.perf_counter()
            StreamEngine(prog, dtype=getattr(np, d)).warmup()
            print(f"{a.program} {d}: engine + first step {1e3 * (time.perf_counter() - t):.1f} ms")
    if a.measure:
        for name, r in start_times(a.program, dtypes[0]).items():
            print(f"{name} start ({dtypes[0]}): process {r['process_s']:.2f} s wall, {r['cpu_s']:.2f} s CPU; "
                  f"import {r['import_s']:.2f} s + engine and first step {r['first_step_s']:.2f} s (wall)")
    return 0
