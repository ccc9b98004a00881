#!/usr/bin/env bash
# Set-up and entry points for a fresh Debian machine with Python 3.11.
#   bash dev.sh demo   the agent against simulated devices on loopback, live view
#   bash dev.sh test   ruff, mypy and the whole test suite
# Both install what they need: Debian's mosquitto and python3-venv when
# missing (as root), and a virtualenv in .venv with the package and its tools.
set -euo pipefail
cd "$(dirname "$0")"

PY=${PYTHON:-python3}
VENV=.venv

need_apt() {
  local missing=()
  command -v mosquitto >/dev/null 2>&1 || [ -x /usr/sbin/mosquitto ] || missing+=(mosquitto)
  command -v softhsm2-util >/dev/null 2>&1 || missing+=(softhsm2)      # PKCS#11 signing tests
  command -v systemd-analyze >/dev/null 2>&1 || missing+=(systemd)     # unit checks
  "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1 || missing+=(python3-venv)
  if [ ${#missing[@]} -gt 0 ]; then
    echo "dev.sh: installing ${missing[*]} from Debian" >&2
    apt-get update
    DEBIAN_FRONTEND=noninteractive apt-get install -y "${missing[@]}"
  fi
}

venv() {
  if [ ! -x "$VENV/bin/python" ]; then
    "$PY" -m venv "$VENV"
  fi
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --upgrade pip >/dev/null
  # A regular (not editable) install: tests and mypy see exactly what ships.
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check ".[test]"
  "$VENV/bin/python" -m pip install -q --disable-pip-version-check --no-deps --force-reinstall .
}

cmd=${1:-}
case "$cmd" in
  demo)
    need_apt
    venv
    shift
    exec "$VENV/bin/cityedge" demo "$@"
    ;;
  test)
    need_apt
    venv
    shift
    echo "== ruff"
    "$VENV/bin/ruff" check .
    "$VENV/bin/ruff" format --check .
    # From an empty folder, so mypy checks the installed package, not the tree.
    echo "== mypy"
    here=$PWD
    (cd "$(mktemp -d)" && "$here/$VENV/bin/mypy" --config-file "$here/pyproject.toml" -p cityedge)
    echo "== pytest"
    exec "$VENV/bin/pytest" "$@"
    ;;
  *)
    echo "usage: bash dev.sh demo|test [args]" >&2
    exit 2
    ;;
esac
