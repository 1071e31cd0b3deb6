#!/usr/bin/env bash
# System packages for keyword spotting (Debian/Ubuntu main; run as root or with sudo; safe to re-run):
#   espeak-ng                     formant synthesizer (8 English accents x its voice variants)
#   flite                         built-in voices kal, kal16, awb, rms, slt
#   festival + festvox-kallpc16k  kal_diphone, festvox-kdlpc16k: ked_diphone, festvox-us-slt-hts: cmu_us_slt_arctic_hts
#   festival voices of other languages (recordings of real people; they read English through their own
#   letter-to-sound rules, keywords through respellings checked by kws/respell.py): festvox-italp16k (lp_diphone),
#   festvox-itapc16k (pc_diphone), festvox-czech-dita / -krb / -machac / -ph, festvox-suopuhe-lj / -mv
#   (Finnish), festvox-ru (msu_ru_nsh_clunits), festvox-ca-ona-hts (upc_ca_ona_hts). Not listed: the hindi /
#   marathi / telugu NSK voices (festival 2.5 crashes loading them).
#   sox                           optional audio conversion; libportaudio2: the microphone via sounddevice
# The three synthesizer families are the leave-one-family-out folds of `essm-stream kws-eval --loso`
# (docs/KWS.md); the tests that need a synthesizer skip without it.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
  sox libportaudio2
# The other languages' voices apart: a release that lacks one of them must not cost the English voices
# (the corpus skips a voice that is not installed).
$SUDO apt-get install -y -qq festvox-italp16k festvox-itapc16k festvox-czech-dita festvox-czech-krb \
  festvox-czech-machac festvox-czech-ph festvox-suopuhe-lj festvox-suopuhe-mv festvox-ru festvox-ca-ona-hts \
  || echo "warning: some festival voices of other languages could not be installed; run I's data needs them"
espeak-ng --version
flite -lv
