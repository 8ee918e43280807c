#!/usr/bin/env bash
# The tests, with everything they need (the README's test command; CI runs exactly this).
#
#   bash scripts/test.sh [PYTEST ARGS...]
#
# 1. As root on Debian: installs what is missing of `chromium` (the viewer's browser tests),
#    `slurm-wlm` and `munge` (the Slurm backend's tests) and `python3-venv` (one `apt-get
#    update`, then `apt-get install`; nothing when all are installed).
# 2. As root: starts the single-host Slurm test cluster (scripts/slurm-test-cluster.sh: writes
#    /etc/slurm/slurm.conf, starts munged, slurmctld and two slurmds, which stay up; nothing to do
#    if it already runs). `bash scripts/slurm-test-cluster.sh stop` stops it.
# 3. Makes the virtual environment .venv (if missing), installs this package with
#    `pip install -e ".[xas,dev]"` into it and runs pytest there with the arguments given.
#
# Not as root nothing is installed or started: the tests that need a missing browser or cluster
# are skipped, each with the reason in pytest's summary (so they are with plain `pytest`).
set -euo pipefail
cd "$(dirname "$0")/.."

say() { echo "scripts/test.sh: $*" >&2; }

root() { [[ $(id -u) -eq 0 ]]; }

installed() { # installed PACKAGE: whether dpkg has it installed
    [[ $(dpkg-query --show --showformat='${Status}' "$1" 2>/dev/null) == "install ok installed" ]]
}

# -- 1. system packages ----------------------------------------------------------------------------
if command -v dpkg-query >/dev/null; then
    missing=()
    for package in chromium slurm-wlm munge; do
        installed "$package" || missing+=("$package")
    done
    if ! python3 -c 'import ensurepip, venv' 2>/dev/null; then
        missing+=(python3-venv)
    fi
    if ((${#missing[@]})); then
        if root; then
            say "installing ${missing[*]} (apt-get)"
            export DEBIAN_FRONTEND=noninteractive
            apt-get update -qq
            apt-get install -y -qq "${missing[@]}"
        else
            say "not root: not installing ${missing[*]}; the tests that need them will be skipped"
        fi
    fi
else
    say "no dpkg: installing nothing; tests whose browser or Slurm cluster is missing are skipped"
fi

# -- 2. the Slurm test cluster ---------------------------------------------------------------------
if root && { command -v slurmctld >/dev/null || [[ -x /usr/sbin/slurmctld ]]; }; then
    bash scripts/slurm-test-cluster.sh
elif timeout 10 sinfo --noheader >/dev/null 2>&1; then
    say "a Slurm cluster answers (not root: not starting one)"
else
    say "no Slurm cluster running and not root to start one: the Slurm tests will be skipped"
fi

# -- 3. the virtual environment, the package, pytest -----------------------------------------------
if [[ ! -x .venv/bin/python ]]; then
    say "making the virtual environment .venv"
    python3 -m venv .venv
fi
say "installing -e \".[xas,dev]\" into .venv"
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[xas,dev]"
say "running pytest $*"
exec .venv/bin/python -m pytest "$@"
