# Sourced by Apiary's scripts: one Python venv for every tool the tests and benchmarks need
# (the S3 test server, the TPC-H generator).
#
#   APIARY_VENV    the venv (default: $HOME/.cache/apiary/venv)
#   APIARY_PYTHON  python creating it (default: python3)

APIARY_VENV=${APIARY_VENV:-$HOME/.cache/apiary/venv}

# venv_install CHECK PACKAGE...: installs PACKAGE... unless `python -c CHECK` already succeeds
# in the venv (creating or repairing the venv first). Progress goes to stderr.
venv_install() {
    local check=$1
    shift
    local py=$APIARY_VENV/bin/python
    if [[ -x $py ]] && "$py" -c "$check" >/dev/null 2>&1; then
        return 0
    fi
    local t0=$SECONDS
    if [[ ! -x $py ]] || ! "$py" -c 'import pip' >/dev/null 2>&1; then
        printf 'venv: creating %s\n' "$APIARY_VENV" >&2
        mkdir -p "$(dirname "$APIARY_VENV")"
        if [[ -f $APIARY_VENV/pyvenv.cfg ]]; then
            # An existing but broken venv (e.g. its base python went away).
            "${APIARY_PYTHON:-python3}" -m venv --clear "$APIARY_VENV" >&2
        else
            "${APIARY_PYTHON:-python3}" -m venv "$APIARY_VENV" >&2
        fi
    fi
    printf 'venv: installing %s\n' "$*" >&2
    "$py" -m pip install --quiet --disable-pip-version-check "$@" >&2
    if ! "$py" -c "$check"; then
        printf 'venv: error: %s is not usable after install\n' "$*" >&2
        return 1
    fi
    printf 'venv: ready in %s s\n' "$((SECONDS - t0))" >&2
}
