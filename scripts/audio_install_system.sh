#!/usr/bin/env bash
# System packages for the microphone path and its loopback test (tests/test_kws_mic_pulse.py):
# pulseaudio (a private user-mode server the test starts itself), pulseaudio-utils (paplay, pactl),
# libasound2-plugins (ALSA's `pulse` plugin: PortAudio -> ALSA -> PulseAudio), alsa-utils (arecord,
# for checking a device by hand), libportaudio2 (sounddevice). The test skips without them.
# Debian/Ubuntu; run as root or with sudo. Safe to re-run. Starts no server and changes no config.
set -euo pipefail
SUDO=""
if [ "$(id -u)" -ne 0 ]; then SUDO="sudo"; fi
$SUDO apt-get update -qq
DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends \
    pulseaudio pulseaudio-utils libasound2-plugins alsa-utils libportaudio2
pulseaudio --version
