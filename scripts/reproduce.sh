#!/bin/sh
# Reproduce the papers' claims from the shell: scripts/reproduce.sh [--quick] [--out DIR]
# Tables (CSV, Markdown) and PNG plots go to DIR (default build/reproduce). Needs the fastrope
# binary ($FASTROPE, default build/fastrope) and numpy; matplotlib only for the plots.
set -e
here=$(dirname "$0")
PYTHON=${PYTHON:-/usr/bin/python3}
export FASTROPE="${FASTROPE:-$here/../build/fastrope}"
exec "$PYTHON" "$here/reproduce.py" "$@"
