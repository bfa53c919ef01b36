#!/usr/bin/env bash
# Installs the test dependencies (Python extras; OpenSSH's sshd and rsync through apt
# when missing and we are root), checks lint (ruff) and types (mypy), and runs the whole
# test suite.  Extra arguments go to pytest.
set -euo pipefail
cd "$(dirname "$0")/.."

python3 -m pip install --quiet --disable-pip-version-check -e ".[test]"

need_apt=()
command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || need_apt+=(openssh-server)
command -v ssh >/dev/null 2>&1 || need_apt+=(openssh-client)
command -v rsync >/dev/null 2>&1 || need_apt+=(rsync)
command -v git >/dev/null 2>&1 || need_apt+=(git)
# The benchmarks' smoke tests: zip is a reference, GNU time measures peak RSS.
command -v zip >/dev/null 2>&1 || need_apt+=(zip)
[ -x /usr/bin/time ] || need_apt+=(time)
if [ ${#need_apt[@]} -gt 0 ]; then
    if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
        echo "installing ${need_apt[*]} through apt" >&2
        apt-get update -qq >/dev/null
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need_apt[@]}" >/dev/null
    else
        echo "error: missing ${need_apt[*]}; install them (the SFTP tests need a real sshd)" >&2
        exit 1
    fi
fi

# Lint and types first: cheap, and the settings live in pyproject.toml.
python3 -m ruff check runicorn tests tools
python3 -m ruff format --check runicorn tests tools
python3 -m mypy

python3 -m pytest -n 2 "$@"

# Without arguments (the whole suite), the snapshot, restore and crash tests once more
# with every job shared with worker processes (runicorn.worker_processes): their files
# are too few to call for workers otherwise.
if [ $# -eq 0 ]; then
    RUNICORN_WORKER_PROCESSES=2 exec python3 -m pytest -n 2 -q \
        tests/test_snapshot_*.py tests/test_restore_*.py tests/test_blob_readers_checked.py \
        tests/test_store_nothing_lost.py tests/test_killed_leftovers.py
fi
