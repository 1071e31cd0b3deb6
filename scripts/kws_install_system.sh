#!/usr/bin/env bash
# System packages for keyword spotting (Debian/Ubuntu main; run as root or with sudo; safe to re-run):
#   espeak-ng                     formant synthesizer (8 English accents x its voice variants)
#   flite                         built-in voices kal, kal16, awb, rms, slt
#   festival + festvox-kallpc16k  kal_diphone, festvox-kdlpc16k: ked_diphone, festvox-us-slt-hts: cmu_us_slt_arctic_hts
#   sox                           optional audio conversion; libportaudio2: the microphone via sounddevice
# The three synthesizer families are the leave-one-family-out folds of `essm-stream kws-eval --loso`
# (docs/KWS.md); the tests that need a synthesizer skip without it.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq espeak-ng flite festival festvox-kallpc16k festvox-kdlpc16k festvox-us-slt-hts \
  sox libportaudio2
espeak-ng --version
flite -lv
