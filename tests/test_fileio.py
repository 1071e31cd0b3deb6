"""essm_stream.fileio: atomic writes keep modes and clean up after killed saves; JSON reads have limits."""
import json
import os
import signal
import stat
import subprocess
import sys
import textwrap
import time

import pytest

from essm_stream.errors import DataFileError, ESSMError, OutputPathError
from essm_stream.fileio import (MAX_JSON_DEPTH, atomic_write_bytes, check_writable, check_writable_dir,
                                clean_stale_temps, json_depth, read_json)


def _mode(p):
    return stat.S_IMODE(os.stat(p).st_mode)


@pytest.fixture
def umask022():
    old = os.umask(0o022)
    yield
    os.umask(old)


def test_new_file_respects_umask(tmp_path, umask022):
    """#11 item 14: mkstemp's 0600 leaked into every file the project wrote; a new file gets 0666 & ~umask."""
    atomic_write_bytes(tmp_path / "a.bin", b"x")
    assert _mode(tmp_path / "a.bin") == 0o644
    os.umask(0o077)
    atomic_write_bytes(tmp_path / "b.bin", b"x")
    assert _mode(tmp_path / "b.bin") == 0o600


def test_rewrite_keeps_the_existing_mode(tmp_path, umask022):
    """#11 item 14: `essm-stream profile` rewriting a 0644 program in place made it 0600."""
    p = tmp_path / "prog.essm"
    p.write_bytes(b"old")
    for mode in (0o640, 0o664, 0o600):
        os.chmod(p, mode)
        atomic_write_bytes(p, b"new")
        assert _mode(p) == mode and p.read_bytes() == b"new"


def test_killed_save_leaves_a_temp_that_the_next_save_removes(tmp_path):
    """#11 item 14: killed saves left hidden .NAME.*.tmp files forever (297 MiB after 20 kills)."""
    target = tmp_path / "big.bin"
    code = textwrap.dedent(f"""
        import os, sys, time
        import essm_stream.fileio as f
        real = os.replace
        def slow_replace(a, b):
            print("written", flush=True)
            time.sleep(60)
        os.replace = slow_replace
        f.atomic_write_bytes({str(target)!r}, b"x" * 100000)
    """)
    p = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True,
                         env={**os.environ, "PYTHONPATH": os.getcwd()})
    try:
        assert p.stdout.readline().strip() == "written"
    finally:
        p.send_signal(signal.SIGKILL)
        p.wait(timeout=30)
    temps = list(tmp_path.glob(".big.bin.*.tmp"))
    assert len(temps) == 1 and temps[0].stat().st_size == 100000
    # another target's temp in the same directory, and a live save's temp, stay
    other = tmp_path / f".big.bin.x.{os.getppid()}-abcdefgh.tmp"   # belongs to target "big.bin.x"
    other.write_bytes(b"o")
    live = tmp_path / f".big.bin.{os.getpid()}-abcdefgh.tmp"       # our own pid: a save in progress
    live.write_bytes(b"l")
    atomic_write_bytes(target, b"fresh")
    assert target.read_bytes() == b"fresh"
    assert not temps[0].exists()
    assert other.exists() and live.exists()
    assert clean_stale_temps(target) == []


def test_old_style_temp_names_are_cleaned_once_old(tmp_path):
    old = tmp_path / ".f.json.ab12cd34.tmp"
    new = tmp_path / ".f.json.zz99yy88.tmp"
    old.write_bytes(b"1")
    new.write_bytes(b"2")
    t = time.time() - 3600
    os.utime(old, (t, t))
    assert clean_stale_temps(tmp_path / "f.json") == [old]
    assert new.exists()


def test_failed_write_leaves_the_old_file_and_no_temp(tmp_path, monkeypatch):
    p = tmp_path / "f.bin"
    p.write_bytes(b"old")

    def boom(*a):
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        atomic_write_bytes(p, b"new")
    assert p.read_bytes() == b"old" and list(tmp_path.iterdir()) == [p]


def test_check_writable(tmp_path):
    """#11 item 15: outputs are checked before long work, with the project's own error."""
    assert check_writable(tmp_path / "new" / "plot.png") == tmp_path / "new" / "plot.png"
    assert list((tmp_path / "new").iterdir()) == []                 # nothing written by the check
    with pytest.raises(OutputPathError, match="is a directory"):
        check_writable(tmp_path)
    f = tmp_path / "file"
    f.write_text("x")
    with pytest.raises(OutputPathError, match="is a file, not a directory"):
        check_writable(f / "plot.png")
    with pytest.raises(OutputPathError, match="not a directory"):
        check_writable_dir(f)
    assert check_writable_dir(tmp_path / "d" / "e").is_dir()
    assert isinstance(OutputPathError("x"), OSError) and isinstance(OutputPathError("x"), ESSMError)


def test_json_nested_100k_deep_is_our_error(tmp_path):
    """#11 item 9: nested JSON 100k deep raised RecursionError."""
    p = tmp_path / "deep.json"
    p.write_text("[" * 100_000 + "]" * 100_000)
    with pytest.raises(DataFileError, match="nests 100000 levels"):
        read_json(p)
    p.write_text('{"a": ' * 100_000)              # unterminated as well
    with pytest.raises(DataFileError):
        read_json(p)


@pytest.mark.parametrize("text, ok", [
    ('{"K": [1, 2], "acc": [0.5, 0.9]}', True),
    ('{"s": "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[["}', True),
    ('{"s": "\\"[[[["}', True),
    ('{"a": NaN}', False),
    ('{"a": Infinity}', False),
    ('{"a": 1', False),
    ('', False),
])
def test_read_json_cases(tmp_path, text, ok):
    p = tmp_path / "x.json"
    p.write_text(text)
    if ok:
        assert read_json(p) == json.loads(text)
    else:
        with pytest.raises(DataFileError, match="x.json"):
            read_json(p)


def test_read_json_limits(tmp_path):
    with pytest.raises(DataFileError, match="cannot read"):
        read_json(tmp_path / "missing.json")
    with pytest.raises(DataFileError, match="cannot read"):
        read_json(tmp_path)                                       # a directory
    p = tmp_path / "big.json"
    p.write_text("[" + "0," * 100 + "0]")
    with pytest.raises(DataFileError, match="limit"):
        read_json(p, max_bytes=100)
    p.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataFileError):
        read_json(p)
    nested = "[" * MAX_JSON_DEPTH + "]" * MAX_JSON_DEPTH
    assert json_depth(nested.encode()) == MAX_JSON_DEPTH
    p.write_text(nested)
    read_json(p)


# -- the numba cache directory (numba unpickles its index files: never load them from a dir others control)

def test_numba_cache_dir_is_one_place_under_the_user_cache(tmp_path):
    """#12 "two numba cache folders": one place, $XDG_CACHE_HOME/essm-stream/numba (beside filters/)."""
    from essm_stream.numba_config import cache_dir, kernel_source_key
    key = kernel_source_key()
    d = cache_dir({"XDG_CACHE_HOME": str(tmp_path)}, tmpdir=str(tmp_path / "tmp"))
    assert d == str(tmp_path / "essm-stream" / "numba" / key)
    assert _mode(d) & 0o077 == 0
    assert cache_dir({"NUMBA_CACHE_DIR": "/some/where"}) == f"/some/where/essm-{key}"
    # a child process inherits the keyed directory and keeps it: the user's one, and the default one
    # (numba_config exports it as NUMBA_CACHE_DIR; CI failed when a child nested a new one inside it)
    assert cache_dir({"NUMBA_CACHE_DIR": f"/some/where/essm-{key}"}) == f"/some/where/essm-{key}"
    assert cache_dir({"NUMBA_CACHE_DIR": d}) == d


def test_numba_cache_is_keyed_by_every_kernel_source(tmp_path, monkeypatch):
    """stream_run inlines kernels_lds/kernels_lru ops and freezes layout.py's offsets as constants,
    but numba only notices edits to the file a cached function is defined in: an edit to any kernel
    source (an upgrade) must change the cache directory, or stale machine code indexes the weights
    with old offsets."""
    import shutil

    from essm_stream import numba_config
    pkg = tmp_path / "pkg"
    pkg.mkdir()
    here = os.path.dirname(numba_config.__file__)
    for name in numba_config.KERNEL_SOURCES:
        shutil.copy(os.path.join(here, name), pkg / name)
    monkeypatch.setattr(numba_config, "__file__", str(pkg / "numba_config.py"))
    keys = {numba_config.kernel_source_key()}
    for name in ("layout.py", "kernels_lds.py", "kernels_lru.py"):
        with open(pkg / name, "a") as f:
            f.write("\n# edited\n")
        keys.add(numba_config.kernel_source_key())
    assert len(keys) == 4


def test_numba_tmp_fallback_checks_owner_and_mode(tmp_path, caplog):
    """#11 item 17: the predictable /tmp fallback was used whoever owned it and whatever its mode."""
    from essm_stream.numba_config import cache_dir, kernel_source_key
    blocked = tmp_path / "not-a-dir"
    blocked.write_text("x")                      # $XDG_CACHE_HOME unusable -> the tmp fallback
    env = {"XDG_CACHE_HOME": str(blocked)}
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    fallback = tmp / f"essm-stream-numba-{os.getuid()}"
    fallback.mkdir(mode=0o700)
    assert cache_dir(env, tmpdir=str(tmp)) == str(fallback / kernel_source_key())
    os.chmod(fallback, 0o777)                    # planted by someone else, world-writable
    assert cache_dir(env, tmpdir=str(tmp)) is None
    assert "lets others write" in caplog.text
    os.chmod(fallback, 0o700)
    if os.getuid() == 0:                         # only root can hand a directory to another user
        os.chown(fallback, 12345, 12345)
        assert cache_dir(env, tmpdir=str(tmp)) is None
        assert "owned by uid 12345" in caplog.text
    import shutil
    shutil.rmtree(fallback)
    fallback.symlink_to(tmp_path)                # a symlink to a directory we own is refused too
    assert cache_dir(env, tmpdir=str(tmp)) is None
    assert "symlink" in caplog.text


def test_package_imports_with_no_safe_cache_dir(tmp_path):
    """With no safe directory the kernels still work, compiled per process (cache off)."""
    blocked = tmp_path / "f"
    blocked.write_text("x")
    tmp = tmp_path / "tmp"
    (tmp / f"essm-stream-numba-{os.getuid()}").mkdir(parents=True)
    os.chmod(tmp / f"essm-stream-numba-{os.getuid()}", 0o777)
    code = ("import numpy as np; from essm_stream import numba_config as c; assert c._CACHE_DIR is None; "
            "f = c.njit(lambda x: x + 1); print(f(np.int64(1)))")
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(XDG_CACHE_HOME=str(blocked), TMPDIR=str(tmp), PYTHONPATH=os.getcwd())
    r = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip() == "2"


def test_filter_cache_file_honours_the_umask(tmp_path, monkeypatch):
    """The Hankel filter cache is written like every other file: atomically, mode 0o666 & ~umask."""
    import os

    import numpy as np

    from essm_stream import hankel
    monkeypatch.setenv("ESSM_CACHE_DIR", str(tmp_path / "filters"))
    sigma, phi = np.arange(3.0), np.ones((5, 3))
    old = os.umask(0o077)
    try:
        hankel._save_disk(5, 3, sigma, phi)
    finally:
        os.umask(old)
    (f,) = (tmp_path / "filters").iterdir()
    assert f.name == hankel._cache_name(5, 3) and (f.stat().st_mode & 0o777) == 0o600
    with np.load(f) as z:
        assert np.array_equal(z["sigma"], sigma) and np.array_equal(z["phi"], phi) and int(z["L"]) == 5


def test_stale_numba_caches_are_pruned_only_when_ours_and_unused(tmp_path):
    """Each kernel-source edit (an upgrade) makes a new keyed cache directory; old ones were never
    removed. Only siblings named like ours, unused for a day, go; fresh ones (another install may be
    starting from them), foreign names, files and symlinks stay."""
    from essm_stream.numba_config import STALE_AFTER_S, prune_stale
    now = 1_000_000_000.0
    base = tmp_path / "numba"
    base.mkdir()
    cur = base / "0123456789abcdef"
    old, fresh = base / "fedcba9876543210", base / "00000000000000aa"
    foreign, short = base / "notes", base / "abc"
    for d in (cur, old, fresh, foreign, short):
        d.mkdir()
        (d / "x.nbi").write_bytes(b"index")
    (base / "1111111111111111").write_text("a file named like a cache")
    (base / "2222222222222222").symlink_to(old)
    for d in (old, foreign, short, base / "1111111111111111"):
        os.utime(d, (now - 2 * STALE_AFTER_S, now - 2 * STALE_AFTER_S))
    os.utime(fresh, (now - STALE_AFTER_S / 2, now - STALE_AFTER_S / 2))
    os.utime(cur, (now - 10 * STALE_AFTER_S, now - 10 * STALE_AFTER_S))   # the one in use is never pruned

    assert prune_stale(str(cur), now=now) == ["fedcba9876543210"]
    left = sorted(p.name for p in base.iterdir())
    assert left == ["00000000000000aa", "0123456789abcdef", "1111111111111111",
                    "2222222222222222", "abc", "notes"]
    assert (cur / "x.nbi").exists() and os.stat(cur).st_mtime > now   # touched: in use
    # inside a user's NUMBA_CACHE_DIR only essm-<key> siblings are ours
    user = tmp_path / "user"
    mine, theirs, stale_ours = user / "essm-0123456789abcdef", user / "fedcba9876543210", user / "essm-fedcba9876543210"
    for d in (mine, theirs, stale_ours):
        d.mkdir(parents=True)
        os.utime(d, (now - 2 * STALE_AFTER_S, now - 2 * STALE_AFTER_S))
    assert prune_stale(str(mine), now=now) == ["essm-fedcba9876543210"]
    assert sorted(p.name for p in user.iterdir()) == ["essm-0123456789abcdef", "fedcba9876543210"]
    # a parent that cannot be listed: nothing happens, nothing raises
    assert prune_stale(str(tmp_path / "missing" / "0123456789abcdef"), now=now) == []
