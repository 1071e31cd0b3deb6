#!/usr/bin/env bash
# System packages for keyword spotting: espeak-ng (synthesises the data set; the tests that need it
# skip without it), sox (optional audio conversion), libportaudio2 (the microphone via sounddevice).
# Debian/Ubuntu; run as root or with sudo. Safe to re-run.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq espeak-ng sox libportaudio2
espeak-ng --version
