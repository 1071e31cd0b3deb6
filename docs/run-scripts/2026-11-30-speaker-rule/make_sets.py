"""Link kws9's per-speaker clean sets into the two leave-half-out folds of the speaker-rule demonstration
(runs/kws10/RULE.txt): validation = val_<fold>_{kw,neg}_<speaker>[.<engine>].npz, test = one part per speaker,
test_<fold>_{kw,neg}_clean.<speaker>[.<engine>].npz (loso.load_condition reads parts). Programs copied to
runs/kws10/models_<model>/<fold>/kws.essm (kws-eval stores the chosen threshold in its copy).
Run from the repository root: PYTHONPATH=. python runs/kws10/make_sets.py"""
import shutil
from pathlib import Path

from essm_stream.kws import voices as V

J = "ho-festival.ked~festival.lp+festival.machac+festival.mv+festival.slt+flite.slt"
S9 = "runs/kws9/sets/spk_"
FILES = {  # speaker -> [(part, kw set, neg set)]
    "ked": [("ked", f"runs/kws8/sets_j/test_{J}_kw_clean.npz", f"runs/kws8/sets_j/test_{J}_neg_clean.npz")],
    "slt": [("slt.festival", "runs/kws8/sets_slth/test_ho-festival.slt_kw_clean.npz",
             "runs/kws8/sets_slth/test_ho-festival.slt_neg_clean.npz"),
            ("slt.flite", "runs/kws2/sets_slt/test_ho-flite.slt_kw_clean.npz",
             "runs/kws2/sets_slt/test_ho-flite.slt_neg_clean.npz")]}
VOICE = {"ked": ["festival:ked_diphone"], "slt": ["festival:cmu_us_slt_arctic_hts", "flite:slt"]}
for v in V.FESTIVAL_OTHER:
    s = V.speaker_of(f"festival:{v}")
    FILES[s] = [(s, f"{S9}festival.{v}_kw_clean.npz", f"{S9}festival.{v}_neg_clean.npz")]
    VOICE[s] = [f"festival:{v}"]
SPEAKERS = sorted(FILES)
assert len(SPEAKERS) == 12, SPEAKERS
A, B = SPEAKERS[:6], SPEAKERS[6:]
MODELS = {"D": "essm_stream/assets/kws_default.essm", "H28": "runs/kws2/cal_programs/models_h_step_28000/kws.essm"}
OUT = Path("runs/kws10")


def fold(test, val):
    return V.fold_name(",".join(v for s in test for v in VOICE[s]) + "~" + ",".join(v for s in val for v in VOICE[s]))


def link(src, dst):
    dst = Path(dst)
    if not dst.exists():
        dst.symlink_to(Path(src).resolve())


if __name__ == "__main__":
    for tag, val, test in (("AvB", A, B), ("BvA", B, A)):
        f = fold(test, val)
        d = OUT / f"sets_{tag}"
        d.mkdir(parents=True, exist_ok=True)
        for s in val:
            for part, kw, neg in FILES[s]:
                link(kw, d / f"val_{f}_kw_{part}.npz")
                link(neg, d / f"val_{f}_neg_{part}.npz")
        for s in test:
            for part, kw, neg in FILES[s]:
                link(kw, d / f"test_{f}_kw_clean.{part}.npz")
                link(neg, d / f"test_{f}_neg_clean.{part}.npz")
        for m, p in MODELS.items():
            for rule in ("spk", "pool"):
                q = OUT / f"models_{tag}_{rule}_{m}" / f / "kws.essm"
                q.parent.mkdir(parents=True, exist_ok=True)
                if not q.exists():
                    shutil.copyfile(p, q)
        print(tag, "validates", val, "reads", test, "fold", f)
