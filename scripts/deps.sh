#!/bin/sh
# Install the Debian packages fastrope needs to build, test and plot, and nothing else.
# Does nothing (and needs no network) when everything is already present, so `make demo` and
# `make test` can call it every time.
set -eu

PKGS="build-essential pkg-config libkissfft-dev libfftw3-dev libcjson-dev libzip-dev zlib1g-dev python3-numpy"
# PyTorch for scripts/fastrope_torch.py and its tests; GNU parallel for the sharded check of
# scripts/examples/check_parallel.sh (tested by make test).
PKGS="$PKGS python3-torch parallel"
# `deps.sh fuzz`: clang's libFuzzer and sanitizer runtimes and its OpenMP, for `make fuzz` only
# (`make test` never needs clang).
[ "${1:-}" = fuzz ] && PKGS="$PKGS clang libclang-rt-14-dev libomp-14-dev"
# matplotlib only draws the benchmark plots; scripts say so and go on when it is missing.
[ "${FASTROPE_PLOTS:-1}" = 1 ] && PKGS="$PKGS python3-matplotlib"

missing=""
for p in $PKGS; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing="$missing $p"
done
[ -z "$missing" ] && exit 0

echo "deps.sh: installing$missing" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
# shellcheck disable=SC2086
$SUDO apt-get install -y -qq --no-install-recommends $missing >/dev/null
