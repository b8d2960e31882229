#!/usr/bin/env bash
# Apiary's one test command: formatting, lints, then every test, run against a
# local S3 server (scripts/s3-test-server).
#
#   ./scripts/test.sh [extra cargo test args...]
#   APIARY_SKIP_LINT=1 ./scripts/test.sh   # skip fmt + clippy (quick local runs)
#
# Every step runs even when an earlier one failed (and `cargo test --no-fail-fast` runs every
# test binary), so that one failure never hides another; the summary at the end names the steps
# that failed, and the exit status is 1 if any did.
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."

section() { printf '\n=== %s ===\n' "$*"; }

failed=()
started=$SECONDS
# step NAME COMMAND...: runs COMMAND, remembering NAME if it fails.
step() {
    local name=$1
    shift
    section "$name"
    local t0=$SECONDS
    if "$@"; then
        printf -- '--- %s: ok in %s s\n' "$name" "$((SECONDS - t0))"
    else
        printf -- '--- %s: FAILED (exit %s) after %s s\n' "$name" "$?" "$((SECONDS - t0))"
        failed+=("$name")
    fi
}

S3_SERVER=./scripts/s3-test-server

section "S3 test server"
# Stop the server at exit only if this run started it; a server the developer
# started by hand (`scripts/s3-test-server start`) is reused and left running.
if "$S3_SERVER" status >/dev/null 2>&1; then
    echo "reusing the running S3 test server"
else
    trap '"$S3_SERVER" stop' EXIT
fi
env_file=$("$S3_SERVER" start)
# shellcheck source=/dev/null
source "$env_file"
echo "S3 endpoint: $AWS_ENDPOINT  bucket: $APIARY_TEST_S3_URL"

section "TPC-H data (scale factor 0.1)"
APIARY_TPCH_SF01=$(./scripts/tpch-data 0.1)
export APIARY_TPCH_SF01
echo "$APIARY_TPCH_SF01"

section "openssl (the TLS test makes its certificates with it)"
# As Chromium below: Debian's package, once; without it only the TLS test fails (it says so).
if ! command -v openssl >/dev/null 2>&1; then
    sudo=()
    [[ $(id -u) == 0 ]] || sudo=(sudo -n)
    export DEBIAN_FRONTEND=noninteractive
    "${sudo[@]}" apt-get install -y -q openssl || {
        "${sudo[@]}" apt-get update -q && "${sudo[@]}" apt-get install -y -q openssl
    } || echo "could not install openssl: the TLS test will fail"
fi
openssl version || true

section "Chromium and playwright-core (the status page test)"
# A failed install fails the page test only (it says what is missing); every other test runs.
if APIARY_NODE_PATH=$(./scripts/browser); then
    export APIARY_NODE_PATH
    echo "$APIARY_NODE_PATH"
else
    echo "could not install Chromium or playwright-core: the status page test will fail"
fi

if [[ ${APIARY_SKIP_LINT:-0} != 1 ]]; then
    step "cargo fmt" cargo fmt --all -- --check
    step "cargo clippy" cargo clippy --workspace --all-targets -- -D warnings
    # Every crate's public surface is committed (`public-api.txt`); a change of it must show in
    # the diff, so a stale listing fails here.
    step "public API listings" ./scripts/public-api --check
else
    section "lints skipped (APIARY_SKIP_LINT=1)"
fi

# Libraries, binaries, integration tests and examples, then doctests (`--all-targets`
# would skip doctests and run the criterion benches in test mode instead).
# The Python wheel's crate is a cdylib for maturin; pytest tests it below.
step "cargo test" cargo test --no-fail-fast --workspace --exclude apiary-python \
    --lib --bins --tests --examples "$@"
step "cargo test (doctests)" cargo test --no-fail-fast --workspace --exclude apiary-python --doc "$@"

quickstart() {
    local dir
    dir=$(mktemp -d)
    cargo run --quiet --example quickstart -- "$dir"
    local status=$?
    rm -rf "$dir"
    return $status
}
step "quickstart (the README's first command)" quickstart

python_wheel() {
    # shellcheck source=lib/venv.sh
    source ./scripts/lib/venv.sh
    # DuckDB: the reference of the row-level change tests (python/tests/test_row_changes_duckdb.py).
    # polars: a producer of Arrow streams other than pyarrow (test_sdk.py).
    venv_install 'import importlib.metadata as m, datafusion, pyarrow, pytest, duckdb, polars; m.version("maturin"); assert datafusion.__version__.startswith("55.")' \
        'maturin>=1.9,<2' 'pyarrow>=14' 'datafusion==55.*' 'pytest>=8' 'duckdb>=1.4,<3' 'polars>=1,<2' || return 1
    # The dev profile and this build's target dir: DataFusion is not compiled in release.
    VIRTUAL_ENV=$APIARY_VENV "$APIARY_VENV/bin/maturin" develop --manifest-path python/Cargo.toml || return 1
    # Bounded, so that a hang shows as a failure (with faulthandler's stacks) and the rest runs.
    timeout 1200 "$APIARY_VENV/bin/python" -m pytest -q python/tests
}
if [[ $# -gt 0 ]]; then
    section "Python wheel: skipped (a cargo test filter was given)"
else
    step "Python wheel (maturin develop, pytest)" python_wheel
fi

section "summary ($((SECONDS - started)) s)"
if [[ ${#failed[@]} -gt 0 ]]; then
    printf 'FAILED: %s\n' "${failed[@]}"
    exit 1
fi
echo "all checks passed"
