#!/usr/bin/env bash
# Installs everything phonehome needs on a Debian machine, as root, idempotently: Debian packages (tshark/dumpcap,
# adb, Chromium, iproute2, Node.js), a virtualenv in .venv with phonehome and its test tools, and the pinned npm
# packages (Allure 3 generator, playwright-core). Each step is skipped when it is already done.
set -euo pipefail
root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

apt_packages=()
command -v dumpcap >/dev/null || apt_packages+=(tshark)
command -v tshark >/dev/null || apt_packages+=(tshark)
command -v adb >/dev/null || apt_packages+=(adb)
command -v chromium >/dev/null || apt_packages+=(chromium)
command -v ip >/dev/null || apt_packages+=(iproute2)
command -v sysctl >/dev/null || apt_packages+=(procps)
command -v node >/dev/null || apt_packages+=(nodejs)
command -v npm >/dev/null || apt_packages+=(npm)
command -v python3 >/dev/null || apt_packages+=(python3 python3-venv)
# the C extension phonehome.scan._runs needs Python's C compiler and headers (without them phonehome installs and
# runs, with its slower pure-Python run decoders): installed when root, else only a warning
build_packages=()
cc=$(python3 -c 'import sysconfig; print((sysconfig.get_config_var("CC") or "gcc").split()[0])' 2>/dev/null || echo gcc)
command -v "$cc" >/dev/null || build_packages+=(gcc)
python3 -c 'import os, sysconfig; raise SystemExit(not os.path.isfile(os.path.join(sysconfig.get_paths()["include"], "Python.h")))' \
  2>/dev/null || build_packages+=(python3-dev)
if ((${#build_packages[@]})); then
  if [ "$(id -u)" = 0 ]; then
    apt_packages+=("${build_packages[@]}")
    build_packages=()  # installed below
  else
    echo "phonehome setup: warning: no ${build_packages[*]}: the scanner's C run decoders will not be built (it runs slower)" >&2
  fi
fi
if ((${#apt_packages[@]})); then
  if [ "$(id -u)" != 0 ]; then
    echo "phonehome setup: need root to install ${apt_packages[*]} (run as root, or install them yourself)" >&2
    exit 2
  fi
  echo "phonehome setup: installing ${apt_packages[*]}"
  echo "wireshark-common wireshark-common/install-setuid boolean false" | debconf-set-selections
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq "${apt_packages[@]}" >/dev/null
fi

# The virtualenv is reinstalled only when pyproject.toml, setup.py or the C source changed since the last install
# (an editable install builds the C extension in place), or when a compiler appeared or went.
stamp=.venv/.phonehome-installed
want=$( (cat pyproject.toml setup.py src/phonehome/scan/_runs.c; echo "build packages missing: ${build_packages[*]}") \
  | sha256sum | cut -d' ' -f1)
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  echo "phonehome setup: installing Python packages into .venv"
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q -e ".[test]"
  echo "$want" >"$stamp"
fi
if ! .venv/bin/python -c 'import phonehome.scan._runs' 2>/dev/null; then
  echo "phonehome setup: warning: the C run decoders (phonehome.scan._runs) are not built, the scanner runs slower;" \
    "to see why: .venv/bin/python -m pip install -v -e ." >&2
  if [ "${PHONEHOME_REQUIRE_SPEEDUPS:-}" = 1 ]; then
    exit 1
  fi
fi

if [ -f package-lock.json ]; then
  want=$(sha256sum package-lock.json | cut -d' ' -f1)
  if [ ! -f node_modules/.phonehome-installed ] || [ "$(cat node_modules/.phonehome-installed)" != "$want" ]; then
    echo "phonehome setup: installing npm packages (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
    echo "$want" >node_modules/.phonehome-installed
  fi
fi
