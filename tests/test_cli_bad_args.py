"""#11 item 15: every subcommand, fed bad arguments, exits 2 with one line of error and no traceback,
before any long work (outputs are checked first). Also: a command module that fails to import fails
the CLI loudly (#12), and the bridge's / controllers' errors are one line too."""
import json

import numpy as np
import pytest

from essm_stream.cli import main
from essm_stream.commands import COMMANDS

MISSING = "/nonexistent/essm-test/missing"


@pytest.fixture(scope="module")
def paths(tmp_path_factory):
    from essm_stream.config import ESSMConfig
    from essm_stream.engine import tiny_program

    d = tmp_path_factory.mktemp("cli")
    prog = d / "tiny.essm"
    tiny_program(ESSMConfig(d_in=3, d_out=2, d_model=8, n_layers=1, seq_len=8, k_max=4)).save(prog)
    f = d / "a_file"
    f.write_text("x")
    out_dir = d / "outdir"
    out_dir.mkdir()
    np.save(d / "good.npy", np.zeros((2, 5, 3), np.float32))
    np.save(d / "empty.npy", np.zeros((0, 5, 3), np.float32))
    np.save(d / "empty_t.npy", np.zeros((0, 3), np.float32))
    np.savez(d / "badlabels.npz", X=np.zeros((4, 5, 3), np.float32), y=np.zeros(3, np.int64))
    np.savez(d / "floatlabels.npz", X=np.zeros((4, 5, 3), np.float32), y=np.zeros(4, np.float32))
    (d / "deep.json").write_text("[" * 100_000 + "]" * 100_000)
    (d / "list.json").write_text(json.dumps([1, 2]))
    (d / "badacc.json").write_text(json.dumps({"acc": "high"}))
    return {"P": str(prog), "F": str(f), "UNDER_FILE": str(f / "x.png"), "D": str(out_dir),
            "GOOD": str(d / "good.npy"), "EMPTY": str(d / "empty.npy"), "EMPTY_T": str(d / "empty_t.npy"),
            "BADLABELS": str(d / "badlabels.npz"), "FLOATLABELS": str(d / "floatlabels.npz"),
            "DEEP": str(d / "deep.json"), "LIST": str(d / "list.json"), "BADACC": str(d / "badacc.json"),
            "MISSING": MISSING}


def _cuda():
    try:
        import torch
        return torch.cuda.is_available()
    except ImportError:
        return True      # no torch: the cuda cases cannot be reached the same way


# (argv with {NAME} placeholders, a word the error line must contain)
BAD = [
    ("train --steps 0", "--steps"),
    ("train --steps -3", "--steps"),
    ("train --lr nan", "--lr"),
    ("train --batch-size 0", "--batch-size"),
    ("train --per-step-k 1.5", "--per-step-k"),
    ("train --d-model x", "--d-model"),
    ("train --eval-every 0", "--eval-every"),
    ("train --task npz", "--data"),
    ("train --task npz --data {MISSING}", "does not exist"),
    ("train --data {GOOD}", "--task npz"),
    ("train --k-dist fixed --k-train 40", "--k-train"),
    ("train --out {UNDER_FILE}", "--out"),
    ("train --device cuda", "CUDA"),
    ("train --device bogus", "--device"),
    ("sweep {MISSING}", "missing"),
    ("sweep {F} --ks 0,1", "--ks"),
    ("sweep {F} --ks a,b", "--ks"),
    ("sweep {F} --ks ,", "--ks"),
    ("sweep {F} --plot {UNDER_FILE}", "--plot"),
    ("sweep {F} --json {D}", "directory"),
    ("sweep {F} --data {MISSING}", "--data"),
    ("sweep {F} --device cuda", "CUDA"),
    ("ablate --variants foo", "--variants"),
    ("ablate --ks ''", "--ks"),
    ("ablate --steps 0", "--steps"),
    ("ablate --markdown {UNDER_FILE}", "--markdown"),
    ("compile {MISSING}", "checkpoint"),
    ("compile {F} -o {D}", "directory"),
    ("compile {F} --frontend {DEEP}", "levels deep"),
    ("compile {F} --budget-profile {MISSING}", "--budget-profile"),
    ("compile {F} --verify -1", "--verify"),
    ("warmup --dtype float16", "--dtype"),
    ("warmup --program {MISSING}", "--program"),
    ("bench --ks 0", "--ks"),
    ("bench --batches x", "--batches"),
    ("bench --steps -1", "--steps"),
    ("bench --plot {UNDER_FILE}", "--plot"),
    ("run {P} {EMPTY}", "no frames"),
    ("run {P} {EMPTY_T}", "no frames"),
    ("run {P} {BADLABELS}", "labels"),
    ("run {P} {FLOATLABELS}", "labels"),
    ("run {P} {GOOD} --batch 0", "--batch"),
    ("run {P} {GOOD} --limit 0", "--limit"),
    ("run {P} {GOOD} --limit -1", "--limit"),
    ("run {P} {GOOD} --K 0", "--K"),
    ("run {P} {GOOD} --K 99", "--K"),
    ("run {P} {GOOD} --schedule 1,99", "--schedule"),
    ("run {P} {GOOD} --schedule a", "--schedule"),
    ("run {P} {GOOD} --K 2 --schedule 1,2", "--schedule"),
    ("run {P} {GOOD} -o {D}", "directory"),
    ("run {P} {MISSING}", "missing"),
    ("run {P} {DEEP}", "cannot read"),
    ("run {MISSING} {GOOD}", "missing"),
    ("run {GOOD} {GOOD}", "good.npy"),
    ("profile {P} --ks 0", "--ks"),
    ("profile {P} --ks 1,99", "--ks"),
    ("profile {P} --steps 0", "--steps"),
    ("profile {P} --period -1", "--period"),
    ("profile {P} --period 0", "--period"),
    ("profile {P} --idle-w nan", "--idle-w"),
    ("profile {P} --sweep {DEEP}", "levels deep"),
    ("profile {P} --json {UNDER_FILE}", "--json"),
    ("profile {P} --out {D}", "directory"),
    ("control-eval --period -1", "--period"),
    ("control-eval --period 0", "--period"),
    ("control-eval --duration 0", "--duration"),
    ("control-eval --deadline-factor -2", "--deadline-factor"),
    ("control-eval --live --fixed-ks 0", "--fixed-ks"),
    ("control-eval --live --scenarios foo", "--scenarios"),
    ("control-eval --live --core 9999", "--core"),
    ("control-eval --miss-target 0", "--miss-target"),
    ("control-eval --split bogus", "--split"),
    ("control-eval --replay-model additive", "--replay-model"),
    ("control-eval --workers 0", "--workers"),
    ("control-eval --replay {MISSING}", "trace"),
    ("control-eval --json {D}", "directory"),
    ("control-eval --out {UNDER_FILE}", "--out"),
    ("control-eval --program {MISSING}", "--program"),
    ("demo --program {P}", "not a keyword-spotting program"),
    ("demo --plot {UNDER_FILE}", "--plot"),
    ("demo --chunk 0", "--chunk"),
    ("demo --budget 0", "--budget"),
    ("demo --budget 1.5", "--budget"),
    ("demo --seconds -1", "--seconds"),
    ("demo --K 0", "--K"),
    ("demo --threshold 2", "--threshold"),
    ("demo --wav {MISSING}", "--wav"),
    ("demo --mic --wav x.wav", "not allowed"),
    ("demo --device-rate 0", "--device-rate"),
    ("demo --blocksize -1", "--blocksize"),
    ("demo --channel -1", "--channel"),
    ("demo --latency 0", "--latency"),
    ("demo --save-audio {D}", "--save-audio"),
    ("kws-data --n-train 0", "--n-train"),
    ("kws-data --workers 0", "--workers"),
    ("kws-data --out {UNDER_FILE}", "--out"),
    ("kws-train --data {MISSING}", "kws-data"),
    ("kws-train --data {D}", "features.npz"),
    ("kws-train --steps 0", "--steps"),
    ("kws-train --p-short 2", "--p-short"),
    ("kws-train --max-minutes 0", "--max-minutes"),
    ("kws-eval --data {MISSING}", "kws-data"),
    ("kws-eval --data {D}", "stream_val.npz"),
    ("compile {F} --tol 2", "--tol"),
    ("compile {F} --no-buffer", "--spectral lds"),
    ("analyze", "PROGRAM"),
    ("analyze {MISSING}", "program"),
    ("analyze {P} --seq-len 64", "not both"),
    ("analyze {P} --tol 0", "--tol"),
    ("analyze {P} --ns 0,4", "--ns"),
    ("analyze --seq-len 6x", "--seq-len"),
    ("analyze {P} --plot {UNDER_FILE}", "--plot"),
    ("sim --robots 0", "--robots"),
    ("sim --episodes -1", "--episodes"),
    ("sim --rate-hz 0", "--rate-hz"),
    ("sim --deadline-factor -1", "--deadline-factor"),
    ("sim --scenarios quake", "--scenarios"),
    ("sim --policy {MISSING}", "--policy"),
    ("sim --json {UNDER_FILE}", "--json"),
    ("bogus-command", "invalid choice"),
]


def _argv(line, paths):
    import shlex
    return [a.format(**paths) for a in shlex.split(line)]


@pytest.mark.parametrize("line, word", BAD, ids=[b[0] for b in BAD])
def test_bad_arguments_exit_2_with_one_line(line, word, paths, capsys):
    """#11 item 15: exit code 2, exactly one line on stderr, no traceback (that the checks come before
    the work is tested by behaviour below, not by a timing bound)."""
    if "cuda" in line and _cuda():
        pytest.skip("this machine has CUDA (or no torch)")
    argv = _argv(line, paths)
    try:
        rc = main(argv)
    except SystemExit as e:
        rc = e.code
    err = capsys.readouterr().err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert rc == 2, (rc, err)
    assert len(lines) == 1, err
    assert "Traceback" not in err and "error:" in lines[0]
    assert word in lines[0], lines[0]


def test_unwritable_out_is_refused_before_training_starts(paths, monkeypatch, capsys):
    """#11 item 15: an unwritable --out was found only after training; now training never starts."""
    pytest.importorskip("torch")
    import essm_stream.train as T

    def no_training(*a, **k):
        raise AssertionError("training started before --out was checked")
    monkeypatch.setattr(T, "train", no_training)
    rc = main(_argv("train --task digits --steps 5 --out {UNDER_FILE}", paths))
    err = capsys.readouterr().err
    assert rc == 2 and "--out" in err and "training started" not in err


def test_every_subcommand_has_bad_argument_cases():
    covered = {b[0].split()[0] for b in BAD}
    assert {name for name, _ in COMMANDS} <= covered, "add bad-argument cases for new commands"


def test_kws_eval_bad_baseline_json(paths, capsys, tmp_path):
    """#11 item 15: a bad baseline JSON ended in a traceback; now one line, exit 2."""
    data = tmp_path / "data"
    data.mkdir()
    for f in ("features.npz", "frontend.json", "stream_val.npz", "stream_test.npz"):
        (data / f).write_text("")
    for bad, word in (("DEEP", "levels deep"), ("LIST", "acc"), ("BADACC", "acc")):
        rc = main(["kws-eval", "--data", str(data), "--program", paths["P"], "--baseline", paths[bad],
                   "--out", str(tmp_path / "out")])
        err = capsys.readouterr().err
        assert rc == 2 and len(err.strip().splitlines()) == 1 and word in err, err


def test_sweep_ks_beyond_the_checkpoints_k_max(tmp_path, capsys):
    """Out-of-range --ks are refused against the checkpoint's K̄ (needs torch to write a checkpoint)."""
    pytest.importorskip("torch")
    from essm_stream import ESSMConfig, ESSMModel
    from essm_stream.checkpoint import save_checkpoint

    ck = tmp_path / "m.safetensors"
    save_checkpoint(ck, ESSMModel(ESSMConfig(d_in=2, d_out=2, d_model=8, n_layers=1, seq_len=8, k_max=4)))
    rc = main(["sweep", str(ck), "--ks", "1,8", "--data", str(ck)])
    err = capsys.readouterr().err
    assert rc == 2 and "--ks value must be an int in [1, 4]" in err, err


def test_a_command_module_that_fails_to_import_fails_loudly(monkeypatch, capsys):
    """#12: the CLI silently dropped a command whose module failed to import."""
    import essm_stream.commands as cmds
    monkeypatch.setattr(cmds, "COMMANDS", cmds.COMMANDS + [("broken", "no_such_module")])
    import essm_stream.cli as cli
    monkeypatch.setattr(cli, "COMMANDS", cmds.COMMANDS)
    assert main(["run", "--help"]) == 1
    err = capsys.readouterr().err
    assert "cannot load the `broken` command" in err and "no_such_module" in err


def test_bridge_and_controller_errors_are_one_line(monkeypatch, capsys):
    """#12: the bridge's ConfigError is not an ESSMError and showed as a traceback."""
    from firmware_bridge.errors import ConfigError as BridgeConfigError, LinkError

    import essm_stream.commands.warmup as w

    def raise_(e):
        def run(a):
            raise e
        return run
    for exc, rc_want in ((BridgeConfigError("rate_hz=-1: rates must be > 0 Hz"), 2),
                         (LinkError("serial port /dev/ttyACM0 lost"), 1),
                         (PermissionError(13, "Permission denied", "/dev/ttyACM0"), 1)):
        monkeypatch.setattr(w, "run", raise_(exc))
        assert main(["warmup"]) == rc_want
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert str(exc.args[-1] if isinstance(exc, PermissionError) else exc) in err


def test_a_missing_optional_dependency_is_one_line(monkeypatch, capsys):
    """A runtime-only install (no torch) running a build command: one line naming the extra, exit 1."""
    import essm_stream.commands.warmup as w

    def run(a):
        raise ModuleNotFoundError("No module named 'torch'", name="torch")
    monkeypatch.setattr(w, "run", run)
    assert main(["warmup"]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "essm-stream[train]" in err, err

    def run_bug(a):
        raise ModuleNotFoundError("No module named 'essm_stream.nope'", name="essm_stream.nope")
    monkeypatch.setattr(w, "run", run_bug)
    with pytest.raises(ModuleNotFoundError):      # our own missing module is a bug: the traceback shows
        main(["warmup"])
