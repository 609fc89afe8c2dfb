#!/usr/bin/env bash
# Installs everything whatsapp_pg needs to build and test on a fresh Debian 12 machine, as root.
# Idempotent: each step is skipped when already done, so reruns take seconds.
set -euo pipefail
cd "$(dirname "$0")/.."

PG_MAJOR=15
PG_CONFIG=/usr/lib/postgresql/$PG_MAJOR/bin/pg_config
PGRX_VERSION=$(sed -n 's/^pgrx = "=\(.*\)"$/\1/p' Cargo.toml)
say() { printf '\033[1m[bootstrap]\033[0m %s\n' "$*"; }
t0=$(date +%s)

if [ "$(id -u)" -ne 0 ]; then
    echo "bootstrap: run as root (it installs Debian packages)" >&2
    exit 1
fi

packages=(postgresql-$PG_MAJOR postgresql-server-dev-$PG_MAJOR libclang-dev clang pkg-config sudo
          chromium)
missing=()
for p in "${packages[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    say "installing Debian packages: ${missing[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

# The Debian package starts its own cluster on 5432; we run our own clusters, so stop it.
if command -v pg_ctlcluster >/dev/null && pg_lsclusters -h 2>/dev/null | grep -q online; then
    pg_lsclusters -h | awk '$4=="online"{print $1, $2}' | while read -r v c; do
        pg_ctlcluster "$v" "$c" stop || true
    done
fi

export PATH="$HOME/.cargo/bin:$PATH"
if [ "$(cargo pgrx --version 2>/dev/null || true)" != "cargo-pgrx $PGRX_VERSION" ]; then
    say "installing cargo-pgrx $PGRX_VERSION (several minutes, once)"
    cargo install cargo-pgrx --version "$PGRX_VERSION" --locked --quiet
fi

if ! grep -qs "pg$PG_MAJOR = \"$PG_CONFIG\"" "${PGRX_HOME:-$HOME/.pgrx}/config.toml"; then
    say "cargo pgrx init against the system PostgreSQL $PG_MAJOR"
    cargo pgrx init --pg$PG_MAJOR "$PG_CONFIG" >/dev/null
fi

# PostgreSQL refuses to run as root: the test clusters run as the 'postgres' OS user, which
# must be able to write the pgrx test data directory.
id postgres >/dev/null 2>&1 || useradd --system --home /var/lib/postgresql --shell /bin/bash postgres
install -d -o postgres -g postgres /var/tmp/whatsapp_pg-pgrx-data

say "ready in $(( $(date +%s) - t0 ))s"
