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

# run a second time with COMFYVN_TEST_STORE=postgresql (tests/conftest.py: the ws fixture's store)
POSTGRES_TESTS=(
  tests/test_store.py tests/test_store_engines.py
  tests/test_asset_registry.py tests/test_multiprocess_registry.py tests/test_registry_layout.py
  tests/test_rights_registry.py
  tests/test_ingest_queue.py tests/test_ingest_jobs.py tests/test_ingest_ratelimit.py tests/test_ingest_state.py
  tests/test_hook_bus.py tests/test_webhooks.py
  tests/test_library_aliases.py tests/test_library_scan.py tests/test_library_identify.py tests/test_hashcache.py
  tests/test_library_cli.py tests/test_library_http.py
  tests/test_licences.py tests/test_licences_http.py
  tests/server
  tests/test_fulltext.py tests/test_fulltext_limits.py tests/test_tag_order.py tests/test_tag_copies_drift.py
  tests/test_ingest_batch.py tests/test_ingest_lease.py tests/test_ingest_lease_config.py tests/test_ingest_crash.py tests/test_ingest_repairs.py
  tests/test_ingest_concurrency.py tests/test_register_files_many.py tests/test_remote_queue.py
  tests/test_sources.py tests/test_sources_batch.py
  tests/test_sidecar_encoding.py tests/reliability/test_fuzz_sidecars.py tests/test_enforcer.py tests/test_thumbnails.py
  tests/test_library_rescan.py tests/test_library_autov3.py tests/test_library_widget.py
  tests/test_licences_dashboard.py tests/test_licences_runbook.py
  tests/reliability/test_security_hooks.py tests/reliability/test_security_webhooks.py
  tests/reliability/test_security_ssrf.py tests/reliability/test_queue_state_machine.py
  tests/widgets/test_queue_inspector.py tests/widgets/test_hook_monitor.py tests/widgets/test_gallery_widget.py
  tests/widgets/test_enforcer_report.py tests/test_enforcer_scale.py
  tests/compat/test_http_compat.py tests/compat/test_metadata_fields.py tests/test_workbench.py
  tests/test_client.py tests/test_client_batch.py
)

summary_line() {  # pytest's closing "N passed, M failed ... in Xs" line of a saved run
  grep -aE '^[0-9]+ (passed|failed|errors?|deselected)|no tests ran' "$1" | tail -n 1
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
  log "unit, server, widget, runbook and reliability tests"
  local out main_rc=0 pg_rc=0
  out="$(mktemp -d)"
  "$PY" -m pytest -q -p no:cacheprovider -m "not browser" "$@" 2>&1 | tee "$out/main.txt" || main_rc=$?
  if [ "$#" -eq 0 ]; then
    # the same store behaviour on the shared engine: each test's workspace on a throw-away PostgreSQL
    log "store, registry, ingest, hook, webhook, library, licence and server-route tests on PostgreSQL"
    COMFYVN_TEST_STORE=postgresql "$PY" -m pytest -q -p no:cacheprovider -m "not browser" \
      "${POSTGRES_TESTS[@]}" 2>&1 | tee "$out/postgresql.txt" || pg_rc=$?
    log "summary"
    printf 'SQLite (whole suite):         %s\nPostgreSQL (store selection): %s\n' \
      "$(summary_line "$out/main.txt")" "$(summary_line "$out/postgresql.txt")"
  fi
  rm -rf "$out"
  [ "$main_rc" -eq 0 ] && [ "$pg_rc" -eq 0 ]
}

case "${1:-}" in
  run) shift; cmd_run "$@" ;;
  test) shift; cmd_test "$@" ;;
  setup) setup_python; setup_browser; setup_postgres ;;
  *) echo "usage: bash tools/dev.sh run|test" >&2; exit 2 ;;
esac
