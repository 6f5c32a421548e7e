#!/usr/bin/env bash
# Creates a virtualenv and installs leadrelay (editable) with its dev tools, at exactly the versions of
# requirements.lock. Re-installs only when pyproject.toml or requirements.lock changed since the last install.
#
#   scripts/bootstrap.sh                     -> .venv      with Python 3.11 (the main venv: demo, lint, full suite)
#   PYTHON_VERSION=3.12 scripts/bootstrap.sh -> .venv-3.12 (and likewise 3.13): `make test` runs the unit and
#                                               agent tests there
#   PYTHON=/path/to/python3.x                -> use that interpreter (its version picks the venv as above)
#   VENV=dir                                 -> install into dir instead
#
# The lock: requirements.lock pins every runtime and dev dependency (and their dependencies) for Python
# 3.11-3.13 in one file, with environment markers where they differ. It is plain pip requirements
# syntax, so installing needs nothing but pip; pyproject.toml keeps the ranges the package accepts.
# It was produced with uv (from PyPI), which can resolve for all supported Pythons at once; after
# changing a dependency in pyproject.toml, regenerate it (existing pins are kept where still allowed)
# and let `make test` check the result:
#   uv pip compile --universal --python-version 3.11 pyproject.toml --extra dev -o requirements.lock
# tests/unit/test_packaging.py fails when the lock misses a dependency or pins outside pyproject's range.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCK=requirements.lock

version_of() { # version_of PYTHON -> "3.x", or nothing when PYTHON does not run (e.g. an inactive pyenv shim)
  "$1" -c 'import sys; print("%d.%d" % sys.version_info[:2])' 2>/dev/null || true
}

find_python() { # find_python 3.x -> path of a working interpreter of that version
  local want=$1 cand
  local pyenv_root=${PYENV_ROOT:-$HOME/.pyenv}
  # python3.x on PATH first; pyenv's shim for it only runs when that version is active, so also look in
  # pyenv's versions directly (newest patch release first), then the usual system places.
  local cands=("python$want")
  [ "$want" = 3.11 ] && cands+=(python3)
  mapfile -t -O ${#cands[@]} cands < <(
    ls -d "$pyenv_root"/versions/"$want"*/bin/python"$want" /root/.pyenv/versions/"$want"*/bin/python"$want" \
      2>/dev/null | sort -rV
  )
  cands+=("/usr/local/bin/python$want" "/usr/bin/python$want")
  for cand in "${cands[@]}"; do
    if [ "$(version_of "$cand")" = "$want" ]; then
      command -v "$cand"
      return 0
    fi
  done
  return 1
}

if [ -n "${PYTHON:-}" ]; then
  PY=$PYTHON
  ver=$(version_of "$PY")
  [ -n "$ver" ] || { echo "bootstrap: PYTHON=$PY does not run" >&2; exit 1; }
else
  ver=${PYTHON_VERSION:-3.11}
  PY=$(find_python "$ver") || {
    echo "bootstrap: Python $ver not found (tried python$ver on PATH, pyenv's versions, /usr/local/bin, /usr/bin)." >&2
    echo "  Install it (e.g. pyenv install $ver), point PYTHON= at it, or skip the extra versions locally with" >&2
    echo "  \`make test PYTHONS_EXTRA=\`." >&2
    exit 1
  }
fi
case "$ver" in
  3.11 | 3.12 | 3.13) ;;
  *) echo "bootstrap: Python $ver is not supported (3.11, 3.12, 3.13; see requires-python)" >&2; exit 1 ;;
esac
if [ -z "${VENV:-}" ]; then
  if [ "$ver" = 3.11 ]; then VENV=.venv; else VENV=.venv-$ver; fi
fi

stamp=$VENV/.installed-$(cat pyproject.toml "$LOCK" | sha1sum | cut -c1-12)
if [ ! -f "$stamp" ]; then
  echo "bootstrap: installing $LOCK into $VENV (Python $ver: $PY)" >&2
  if [ -f "$VENV/pyvenv.cfg" ] && [ "$(version_of "$VENV/bin/python")" != "$ver" ]; then
    rm -rf "$VENV" # a venv of another (or a removed) Python: start over
  fi
  [ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
  # git ignores the venv's content by itself (as `python3.13 -m venv` does), whatever the venv's name
  [ -f "$VENV/.gitignore" ] || echo '*' >"$VENV/.gitignore"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check -r "$LOCK"
  # The dependencies came from the lock; --no-deps keeps pip from resolving anything else.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps -e .
  "$VENV/bin/python" -m pip check >/dev/null || { "$VENV/bin/python" -m pip check >&2; exit 1; }
  rm -f "$VENV"/.installed-*
  touch "$stamp"
fi
