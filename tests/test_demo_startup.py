"""The demo reports its own start-up cost (issue 13, cold start): the line the bench reads."""
import contextlib
import io
import re


def test_demo_prints_its_start_up_cost_in_the_form_the_bench_reads():
    from essm_stream.cli import main
    from essm_stream.commands.demo import COMPILE_RE, STARTUP_RE, WHOLE_RE
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo", "--fast", "--seconds", "1", "--plot", "", "--quiet"])
    assert rc == 0
    m = re.search(STARTUP_RE, buf.getvalue())
    assert m is not None, buf.getvalue()[-800:]
    cpu, wall = float(m.group(1)), float(m.group(2))
    assert cpu > 0 and wall > 0          # measured from process start: includes this test's imports
    # the engine's kernel compiled (or loaded) in the background: its CPU, and start-up with it added
    m = re.search(COMPILE_RE, buf.getvalue())
    assert m is not None, buf.getvalue()[-800:]
    compile_cpu, with_compile = float(m.group(1)), float(m.group(2))
    assert compile_cpu >= 0 and with_compile >= compile_cpu
    m = re.search(WHOLE_RE, buf.getvalue())
    assert m is not None and float(m.group(1)) >= cpu       # the whole run includes its start-up


def test_demo_compile_first_prints_no_background_compile_line():
    from essm_stream.cli import main
    from essm_stream.commands.demo import COMPILE_RE, STARTUP_RE, WHOLE_RE
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        rc = main(["demo", "--fast", "--seconds", "1", "--plot", "", "--quiet", "--compile-first"])
    assert rc == 0
    out = buf.getvalue()
    assert re.search(STARTUP_RE, out) and re.search(WHOLE_RE, out) and not re.search(COMPILE_RE, out), out[-800:]
    assert "(compiled kernel)" in out            # the engine's CPU per step is the compiled kernel's throughout
