# whatsapp_pg — build, test and run.
#   make test   everything CI runs (installs what is missing first)
#   make demo   a local cluster with the extension, end to end
SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
export PATH := $(HOME)/.cargo/bin:$(PATH)
export CARGO_TERM_COLOR := never

PG_CONFIG    := /usr/lib/postgresql/15/bin/pg_config
PGTEST_DIR   := /var/tmp/whatsapp_pg-pgtest
PGRX_DATA    := /var/tmp/whatsapp_pg-pgrx-data
# Test clusters never reach Meta: a closed local port answers at once (tests that need Graph
# point the cluster at their own graph-sim).
NO_GRAPH     := WA_GRAPH_API_URL=http://127.0.0.1:9
# RUST_BACKTRACE=1 for the cluster, as on many build machines: errors must not carry it.
IT_ENV       := RUST_BACKTRACE=1 WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-it WA_PORT=55433 WA_DATABASE=wa_it WA_EXTRA_CONF="wa.allow_any_database = on" $(NO_GRAPH)

GW_ENV       := WA_CLUSTER_DIR=/var/tmp/whatsapp_pg-gw WA_PORT=55434 WA_DATABASE=wa_gw WA_EXTRA_CONF="wa.allow_any_database = on" $(NO_GRAPH)
GW_DSN       := host=127.0.0.1 port=55434 user=postgres dbname=postgres

.PHONY: test bootstrap lint unit pgtest install it citus-test gateway-test upgrade-test package package-test demo demo-stop bench-ingest bench-statuses bench-send bench-backlog bench-loop bench-media bench-parse

test: bootstrap lint unit pgtest it citus-test gateway-test upgrade-test package-test
	@echo "make test: all suites passed"

bootstrap:
	@bash scripts/bootstrap.sh

lint:
	cargo fmt --all --check
	cargo clippy --workspace --all-targets --features whatsapp_pg/pg_test -- -D warnings

# Pure crates: plain cargo test, no PostgreSQL (the client's tests drive graph-sim over loopback).
unit:
	cargo test -p whatsapp-client -p graph-sim

# #[pg_test]s inside a pgrx-managed cluster with the extension preloaded.
pgtest:
	@install -d -o postgres -g postgres -m 0700 $(PGTEST_DIR)
	@test -s $(PGTEST_DIR)/master.key || { umask 077; printf 'pgtest:%s\n' "$$(head -c 32 /dev/urandom | base64 -w0)" > $(PGTEST_DIR)/master.key; }
	@chown postgres:postgres $(PGTEST_DIR)/master.key && chmod 0600 $(PGTEST_DIR)/master.key
	@install -d -o postgres -g postgres $(PGRX_DATA)
	cargo pgrx test pg15 --runas postgres --pgdata $(PGRX_DATA)

# The extension, its install script, the released install scripts and the upgrade scripts.
install:
	cargo pgrx install --pg-config $(PG_CONFIG)
	@bash scripts/upgrade-scripts.sh "$$($(PG_CONFIG) --sharedir)/extension"

# SQL-level integration tests over real connections to a real cluster.
it: install
	@$(IT_ENV) scripts/cluster.sh destroy
	@$(IT_ENV) scripts/cluster.sh start
	WA_IT_DIR=/var/tmp/whatsapp_pg-it WA_IT_PORT=55433 cargo test -p wa-integration-tests || { $(IT_ENV) scripts/cluster.sh stop; exit 1; }
	@$(IT_ENV) scripts/cluster.sh stop

# The webhook gateway over HTTP, and the Connect WhatsApp component in headless Chromium,
# against a cluster with the extension and graph-sim.
gateway-test: install
	@$(GW_ENV) scripts/cluster.sh destroy
	@$(GW_ENV) scripts/cluster.sh start
	WA_GATEWAY_TEST_DSN='$(GW_DSN)' cargo test -p whatsapp-gateway || { $(GW_ENV) scripts/cluster.sh stop; exit 1; }
	WA_GATEWAY_TEST_DSN='$(GW_DSN)' bash frontend/test/run.sh || { $(GW_ENV) scripts/cluster.sh stop; exit 1; }
	@$(GW_ENV) scripts/cluster.sh stop

# ALTER EXTENSION UPDATE from the previous release (RELEASES), built from its commit, with
# data, against a fresh install's catalog. Installs the current build again as it goes.
upgrade-test:
	bash tests/upgrade/run.sh

# A two-node Citus cluster (coordinator and worker on two ports, Citus built from ../shared/citus):
# CREATE EXTENSION, wa.distribute(), the placements and shards on both nodes.
citus-test: install
	bash tests/citus/run.sh

# The Debian package (target/package/*.deb): extension, gateway with its systemd unit, docs.
package: bootstrap
	bash scripts/package.sh

# Installs the package (debug build) on a clean cluster and runs the smoke test; removes it.
package-test:
	bash tests/package/run.sh

demo: bootstrap install
	@bash scripts/demo.sh

demo-stop:
	@bash scripts/demo-stop.sh

# Benchmarks print figures (never part of make test). They install the extension in release
# mode; run `make install` afterwards to go back to the debug build the tests use.
bench-ingest: bootstrap
	cargo pgrx install --release --pg-config $(PG_CONFIG) >/dev/null
	@bash scripts/upgrade-scripts.sh "$$($(PG_CONFIG) --sharedir)/extension" >/dev/null
	bash scripts/bench-ingest.sh $(BENCH_ARGS)

# The status mode of bench-ingest: delivered statuses of sent messages against plain UPDATEs.
bench-statuses:
	$(MAKE) bench-ingest BENCH_ARGS="--statuses $(BENCH_ARGS)"

bench-send: bootstrap
	bash scripts/bench-worker.sh send $(BENCH_ARGS)

# Only bench-send's backlog part, at a provider's size: 1,000,000 messages over 500 numbers,
# default settings, worker RSS sampled every second.
bench-backlog: bootstrap
	bash scripts/bench-worker.sh send --backlog-only --numbers 500 --backlog 1000000 $(BENCH_ARGS)

# The closed loop: worker → graph-sim → signed status webhooks → gateway → the same cluster.
bench-loop: bootstrap
	bash scripts/bench-worker.sh loop $(BENCH_ARGS)

# A burst of 64 inbound videos of 50 MB each (one more corrupted), through the gateway and the
# worker's streamed downloads, worker memory sampled every 100 ms; next to bare downloads.
bench-media: bootstrap
	bash scripts/bench-worker.sh media $(BENCH_ARGS)

bench-parse:
	cargo run --release -q -p wa-benches --bin bench-parse
