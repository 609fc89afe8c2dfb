#!/usr/bin/env bash
# Builds the Debian package postgresql-15-whatsapp-pg: the extension (library, control file,
# install scripts of this version and the released ones, upgrade scripts), the webhook gateway
# with its systemd unit and settings file, the Connect WhatsApp component, and the docs.
#
#   scripts/package.sh            # release build (what a server gets)
#   PACKAGE_PROFILE=debug scripts/package.sh   # the debug build the tests already made
#
# Prints the path of the .deb (under target/package/). tests/package/run.sh installs it on a
# clean cluster and runs the end-to-end smoke test.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"
PG_CONFIG=/usr/lib/postgresql/15/bin/pg_config
PG_MAJOR=$("$PG_CONFIG" --version | sed -n 's/^PostgreSQL \([0-9]*\).*/\1/p')
PROFILE=${PACKAGE_PROFILE:-release}
VERSION=$(sed -n 's/^version = "\(.*\)"$/\1/p' Cargo.toml | head -1)
ARCH=$(dpkg --print-architecture)
NAME=postgresql-$PG_MAJOR-whatsapp-pg
TARGET=${CARGO_TARGET_DIR:-target}
OUT=$TARGET/package
ROOT=$OUT/$NAME-$VERSION

rm -rf "$ROOT"
install -d "$ROOT"

# The extension: cargo pgrx lays out usr/lib/postgresql/N/lib and usr/share/postgresql/N/extension.
case "$PROFILE" in
    release) pgrx_profile=() cargo_profile=(--release) bin_dir=$TARGET/release ;;
    debug) pgrx_profile=(--debug) cargo_profile=() bin_dir=$TARGET/debug ;;
    *) echo "package: PACKAGE_PROFILE is release or debug" >&2; exit 2 ;;
esac
cargo pgrx package "${pgrx_profile[@]}" --pg-config "$PG_CONFIG" --out-dir "$ROOT" >"$OUT/pgrx-package.log" 2>&1 \
    || { tail -30 "$OUT/pgrx-package.log" >&2; exit 1; }
ext_dir=$ROOT$("$PG_CONFIG" --sharedir)/extension
lib_dir=$ROOT$("$PG_CONFIG" --pkglibdir)
[ -s "$lib_dir/whatsapp_pg.so" ] && [ -s "$ext_dir/whatsapp_pg--$VERSION.sql" ] \
    || { echo "package: cargo pgrx package did not write the library and install script" >&2; exit 1; }
bash scripts/upgrade-scripts.sh "$ext_dir" >/dev/null

# The gateway, its unit and settings, the component it serves.
cargo build -q "${cargo_profile[@]}" -p whatsapp-gateway
install -D -m 0755 "$bin_dir/whatsapp-gateway" "$ROOT/usr/bin/whatsapp-gateway"
install -D -m 0644 packaging/whatsapp-gateway.service "$ROOT/lib/systemd/system/whatsapp-gateway.service"
install -D -m 0640 packaging/gateway.env "$ROOT/etc/whatsapp-gateway/gateway.env"
install -D -m 0644 frontend/whatsapp-connect.js "$ROOT/usr/share/whatsapp-pg/assets/whatsapp-connect.js"

# Docs.
doc=$ROOT/usr/share/doc/$NAME
install -d "$doc"
install -m 0644 README.md docs/DEPLOYMENT.md docs/INTEGRATION.md docs/META_APP_CHECKLIST.md "$doc/"
install -m 0644 gateway/README.md "$doc/GATEWAY.md"
install -m 0644 frontend/README.md "$doc/COMPONENT.md"

# Package metadata.
install -d "$ROOT/DEBIAN"
installed_kb=$(du -sk --exclude=DEBIAN "$ROOT" | cut -f1)
sed -e "s/@NAME@/$NAME/" -e "s/@VERSION@/$VERSION/" -e "s/@ARCH@/$ARCH/" \
    -e "s/@PG_MAJOR@/$PG_MAJOR/g" -e "s/@SIZE@/$installed_kb/" packaging/control >"$ROOT/DEBIAN/control"
printf '/etc/whatsapp-gateway/gateway.env\n' >"$ROOT/DEBIAN/conffiles"
install -m 0755 packaging/postinst "$ROOT/DEBIAN/postinst"
install -m 0755 packaging/postrm "$ROOT/DEBIAN/postrm"
(cd "$ROOT" && find . -path ./DEBIAN -prune -o -type f -printf '%P\n' | sort | xargs md5sum) >"$ROOT/DEBIAN/md5sums"

deb=$OUT/${NAME}_${VERSION}_$ARCH.deb
dpkg-deb --root-owner-group --build "$ROOT" "$deb" >/dev/null
echo "$deb"
