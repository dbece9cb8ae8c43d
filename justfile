# Everyday commands for authd. `just --list` shows them.

pg_url := "postgres://postgres@127.0.0.1:5432/postgres"

# Run the server on the SQLite default (creates ./authd.db).
run *args:
    cargo run --release -- serve {{args}}

# The test suite on SQLite.
test *args:
    cargo test {{args}}

# The test suite on SQLite and on PostgreSQL (a fresh database per test).
test-pg *args:
    AUTHD_TEST_DATABASE_URL={{pg_url}} cargo test {{args}}

# Formatting check, clippy, and the linters of the deployment files.
lint:
    cargo fmt --all --check
    cargo clippy --all-targets -- -D warnings
    hadolint Dockerfile
    kubernetes-validate --strict deploy/kubernetes/[!k]*.yaml
    promtool check rules deploy/prometheus/authd.rules.yml
    promtool test rules deploy/prometheus/authd.rules.test.yml
    python3 deploy/prometheus/prometheusrule.py --check
    python3 .ci/check-metric-names.py

# Regenerate the PrometheusRule of overlays/monitoring from deploy/prometheus/authd.rules.yml.
prometheusrule:
    python3 deploy/prometheus/prometheusrule.py

# Format the code.
fmt:
    cargo fmt --all

# Everything CI runs.
ci:
    bash .ci/run
