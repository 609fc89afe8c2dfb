#!/usr/bin/env bash
# The Debian package, installed as a DBA would, with nothing from the build tree:
#   1. build it (`scripts/package.sh`; PACKAGE_PROFILE=debug here, reusing the tests' build);
#   2. remove every file `make install` put into PostgreSQL's directories, then `dpkg -i`;
#      check what the package holds and that its systemd unit is valid;
#   3. on a clean cluster, run the end-to-end smoke test (scripts/demo.sh) with the packaged
#      gateway and component: create the extension, connect a tenant through Embedded Signup
#      against graph-sim, send a message and see it delivered and read, receive a reply;
#   4. upgrade check: the packaged extension offers the upgrade from the previous release;
#   5. remove the package (purge) and check that it leaves nothing behind.
# Run by `make package-test` (part of `make test`, last: it leaves the extension uninstalled;
# `make install` puts the build tree's back).
set -euo pipefail
cd "$(dirname "$0")/../.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
NAME=postgresql-15-whatsapp-pg
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
FROM=$(sed -n 's/^\([0-9.]*\) .*/\1/p' RELEASES | tail -1)
EXT_DIR=$("$PG_CONFIG" --sharedir)/extension
LIB_DIR=$("$PG_CONFIG" --pkglibdir)
export WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-package WA_PORT=55439 WA_DATABASE=whatsapp
export WA_DEMO_DIR=/var/tmp/whatsapp_pg-package-demo WA_DEMO_SIM_PORT=18098 WA_DEMO_GATEWAY_PORT=18099

say() { printf '\033[1m[package-test]\033[0m %s\n' "$*"; }
fail() { echo "package-test: FAILED: $*" >&2; exit 1; }
cleanup() { scripts/demo-stop.sh >/dev/null 2>&1 || true; }
trap cleanup EXIT

# ---- 1. build --------------------------------------------------------------------------------
deb=$(PACKAGE_PROFILE=${PACKAGE_PROFILE:-debug} bash scripts/package.sh)
say "built $deb ($(du -h "$deb" | cut -f1))"
[ "$(dpkg-deb -f "$deb" Package)" = "$NAME" ] && [ "$(dpkg-deb -f "$deb" Version)" = "$VERSION" ] \
    || fail "package name or version"

# ---- 2. install it, and only it ---------------------------------------------------------------
cleanup
dpkg_quiet() { dpkg "$@" >"$WA_DEMO_DIR.dpkg.log" 2>&1 || { cat "$WA_DEMO_DIR.dpkg.log"; fail "dpkg $*"; }; }
if dpkg -s "$NAME" >/dev/null 2>&1; then dpkg_quiet --purge "$NAME"; fi
rm -f "$LIB_DIR/whatsapp_pg.so" "$EXT_DIR"/whatsapp_pg.control "$EXT_DIR"/whatsapp_pg--*.sql
dpkg_quiet -i "$deb"
[ "$(dpkg-query -W -f '${Status}' "$NAME")" = "install ok installed" ] || fail "dpkg -i"
for f in "$LIB_DIR/whatsapp_pg.so" "$EXT_DIR/whatsapp_pg.control" "$EXT_DIR/whatsapp_pg--$VERSION.sql" \
         "$EXT_DIR/whatsapp_pg--$FROM.sql" "$EXT_DIR/whatsapp_pg--$FROM--$VERSION.sql" \
         /usr/bin/whatsapp-gateway /lib/systemd/system/whatsapp-gateway.service \
         /etc/whatsapp-gateway/gateway.env /usr/share/whatsapp-pg/assets/whatsapp-connect.js \
         "/usr/share/doc/$NAME/DEPLOYMENT.md"; do
    dpkg -S "$f" >/dev/null 2>&1 || fail "$f does not come from the package"
done
getent passwd wa_gateway >/dev/null || fail "the package did not create the wa_gateway user"
[ "$(stat -c '%a %U:%G' /etc/whatsapp-gateway/gateway.env)" = "640 root:wa_gateway" ] \
    || fail "gateway.env is $(stat -c '%a %U:%G' /etc/whatsapp-gateway/gateway.env), not 640 root:wa_gateway"
if command -v systemd-analyze >/dev/null; then
    systemd-analyze verify /lib/systemd/system/whatsapp-gateway.service 2>"$WA_CLUSTER_DIR.unit.log" \
        || { cat "$WA_CLUSTER_DIR.unit.log"; fail "systemd-analyze verify whatsapp-gateway.service"; }
fi
say "ok: installed from the package: $(dpkg -L "$NAME" | grep -c .) paths"

# ---- 3. smoke test on a clean cluster --------------------------------------------------------
scripts/cluster.sh destroy >/dev/null
WA_DEMO_GATEWAY_BIN=/usr/bin/whatsapp-gateway WA_DEMO_ASSETS_DIR=/usr/share/whatsapp-pg/assets \
    bash scripts/demo.sh >"$WA_DEMO_DIR.log" 2>&1 || { tail -40 "$WA_DEMO_DIR.log"; fail "the smoke test"; }
grep -q "^whatsapp_pg $VERSION$" "$WA_DEMO_DIR.log" || fail "the cluster did not run version $VERSION"
say "ok: signup, send (delivered and read) and a reply, with the packaged extension and gateway"

# ---- 4. the upgrade path ships ---------------------------------------------------------------
runuser -u postgres -- psql -h "$WA_CLUSTER_DIR" -p "$WA_PORT" -d "$WA_DATABASE" -qAtX \
    -c "SELECT source || ' -> ' || target FROM pg_extension_update_paths('whatsapp_pg') WHERE path IS NOT NULL AND source = '$FROM' AND target = '$VERSION'" \
    | grep -qx "$FROM -> $VERSION" || fail "the package has no update path $FROM -> $VERSION"
say "ok: the package updates $FROM to $VERSION"

# ---- 5. removal ------------------------------------------------------------------------------
cleanup
scripts/cluster.sh destroy >/dev/null
dpkg_quiet --purge "$NAME"
left=$(ls "$LIB_DIR/whatsapp_pg.so" "$EXT_DIR"/whatsapp_pg* /usr/bin/whatsapp-gateway /etc/whatsapp-gateway 2>/dev/null || true)
[ -z "$left" ] || fail "left after purge: $left"
say "ok: purged without leftovers"
say "package $NAME $VERSION passed"
