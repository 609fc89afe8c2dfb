#!/usr/bin/env bash
# The end-to-end demo: a local cluster with whatsapp_pg, a configured Meta app and a connected
# tenant. (`make demo` builds and installs the extension first.)
set -euo pipefail
cd "$(dirname "$0")/.."
export WA_CLUSTER_DIR=${WA_CLUSTER_DIR:-/var/tmp/whatsapp_pg-cluster}
export WA_PORT=${WA_PORT:-55432}
export WA_DATABASE=${WA_DATABASE:-whatsapp}

step() { printf '\n\033[1m== %s\033[0m\n' "$*"; }
sql() { runuser -u postgres -- psql -h "$WA_CLUSTER_DIR" -p "$WA_PORT" -d "$WA_DATABASE" -v ON_ERROR_STOP=1 -qAt "$@"; }

step "PostgreSQL 15 with whatsapp_pg preloaded"
scripts/cluster.sh stop   # a running postmaster keeps the previously installed library
scripts/cluster.sh start
sql -c "CREATE EXTENSION IF NOT EXISTS whatsapp_pg"
sql -c "SELECT extversion FROM pg_extension WHERE extname = 'whatsapp_pg'" | sed 's/^/whatsapp_pg version /'

step "Configure the Technology Provider's Meta app"
sql -c "SELECT wa.configure_app('1234567890', 'demo-app-secret', 'demo-verify-token', '987654321')"
sql -c "SELECT jsonb_pretty(wa.signup_config())"

step "Create a tenant and connect its WhatsApp number"
tenant=$(sql -c "SELECT tenant_id FROM wa.tenants WHERE external_ref = 'demo-hotel'")
if [ -z "$tenant" ]; then
    tenant=$(sql -c "SELECT wa.create_tenant('Demo Hotel', 'demo-hotel')")
fi
echo "tenant $tenant"
sql -c "SELECT jsonb_pretty(wa.connect_tenant('$tenant', '100000000000001', '200000000000001', 'EAAGdemo0000000000000000token'))"

step "Connection status, as the host application sees it"
sql -c "SET wa.tenant_id = '$tenant'; SET ROLE wa_app; SELECT jsonb_pretty(wa.connection_status('$tenant'))"

cat <<EOT

The cluster keeps running: psql -h $WA_CLUSTER_DIR -p $WA_PORT -U postgres $WA_DATABASE
(as root: runuser -u postgres -- psql …). Stop it with: make demo-stop
EOT
