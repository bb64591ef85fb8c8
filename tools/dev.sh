#!/usr/bin/env bash
# The workbench's two entry points (see README):
#   bash tools/dev.sh run    set up, seed a demo workspace, start JupyterLab on 127.0.0.1
#   bash tools/dev.sh test   set up (incl. Debian chromium), run the whole test suite
# Setup is idempotent: a .venv beside this repo, the pinned stack and the package (editable;
# the editable install also enables the Jupyter server extension in the venv).
set -euo pipefail
cd "$(dirname "$0")/.."
REPO="$PWD"
VENV="${COMFYVN_VENV:-$REPO/.venv}"
PY="$VENV/bin/python"

log() { printf '\033[1m[comfyvn]\033[0m %s\n' "$*" >&2; }

setup_python() {
  if [ ! -x "$PY" ]; then
    log "creating virtual environment in $VENV"
    python3 -m venv "$VENV"
  fi
  if [ ! -x "$VENV/bin/uv" ]; then
    "$PY" -m pip install -q --disable-pip-version-check uv
  fi
  log "installing the pinned stack and the workbench (editable)"
  "$VENV/bin/uv" pip install --python "$PY" -q -e "$REPO[test]"
}

setup_browser() {
  if [ -x /usr/bin/chromium ]; then return; fi
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian's chromium for the browser tests"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium >/dev/null
  else
    log "chromium is missing: run 'sudo apt-get install -y chromium'"; exit 1
  fi
}

setup_postgres() {
  # the tests start throw-away PostgreSQL clusters (tests/pgserver.py) from Debian's server binaries
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then return; fi
  if [ "$(id -u)" = 0 ]; then
    log "installing Debian's PostgreSQL server for the shared-store tests"
    apt-get update -q >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q postgresql >/dev/null
  else
    log "PostgreSQL is missing: run 'sudo apt-get install -y postgresql'"; exit 1
  fi
}

cmd_run() {
  setup_python
  # seeds demo-workspace/ (once) and starts JupyterLab; the URL, the venv's activate line and
  # the JUPYTER_TOKEN/BASE exports are printed once the server answers
  exec "$VENV/bin/comfyvn-workbench" demo --workspace "${COMFYVN_HOME:-$REPO/demo-workspace}" "$@"
}

cmd_test() {
  setup_python
  setup_browser
  setup_postgres
  export PYTHONDONTWRITEBYTECODE=1
  log "ruff"
  "$VENV/bin/ruff" check "$REPO"
  log "mypy (comfyvn/ and server_ext/; strict on the concept modules, see [tool.mypy] in pyproject.toml)"
  "$VENV/bin/mypy" --config-file "$REPO/pyproject.toml"
  log "benchmarks (quick settings; full figures in docs/BENCHMARKS.md)"
  "$PY" bench/run_all.py --quick
  log "documentation notebooks (nbval)"
  "$PY" -m pytest -q -p no:cacheprovider --nbval-lax notebooks/docs
  log "browser tests (Voila + Debian chromium via Playwright)"
  "$PY" -m pytest -q -p no:cacheprovider -m browser tests/browser
  # the main suite runs last, so its summary line closes the run
  log "unit, server, widget, runbook and reliability tests"
  "$PY" -m pytest -q -p no:cacheprovider -m "not browser" "$@"
}

case "${1:-}" in
  run) shift; cmd_run "$@" ;;
  test) shift; cmd_test "$@" ;;
  setup) setup_python; setup_browser; setup_postgres ;;
  *) echo "usage: bash tools/dev.sh run|test" >&2; exit 2 ;;
esac
