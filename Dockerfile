# authd container image.
#
#   docker build -t authd:0.1.0 .
#   docker run --rm -p 50051:50051 -p 9090:9090 -v authd-data:/var/lib/authd authd:0.1.0
#
# The default database is a SQLite file in the /var/lib/authd volume. For more than
# one replica, point AUTHD_DATABASE_URL at PostgreSQL (see deploy/kubernetes/).

# ---- base images -------------------------------------------------------------------
# Pin both by digest for a reproducible build: the tag stays for people to read, the
# digest decides. Look the digests up where the registries are reachable, e.g.
#   docker buildx imagetools inspect rust:1.95-bookworm --format '{{json .Manifest.Digest}}'
# and pass them in (CI and releases should), or write them into the defaults here:
#   docker build \
#     --build-arg RUST_IMAGE=rust:1.95-bookworm@sha256:<digest> \
#     --build-arg RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot@sha256:<digest> .
# (The defaults carry no digest yet: none could be looked up where this was written.)
ARG RUST_IMAGE=rust:1.95-bookworm
ARG RUNTIME_IMAGE=gcr.io/distroless/cc-debian12:nonroot

# ---- toolchain --------------------------------------------------------------------
# Debian 12 (bookworm) on both sides, so the binary links against the same glibc that
# the runtime stage ships. cargo-chef turns the workspace's manifests (every member:
# the server, migrations/, bench/ …) into a skeleton whose dependencies can be built,
# and cached, before the sources are copied in.
FROM ${RUST_IMAGE} AS chef
RUN cargo install cargo-chef --locked --version 0.1.78
WORKDIR /src

# ---- planner: the dependency recipe (changes only when a manifest or Cargo.lock does)
FROM chef AS planner
COPY . .
RUN cargo chef prepare --recipe-path recipe.json

# ---- builder ---------------------------------------------------------------------
FROM chef AS builder
# 1. Dependencies only: this layer stays cached until recipe.json changes.
COPY --from=planner /src/recipe.json recipe.json
RUN cargo chef cook --release --locked --bin authd --recipe-path recipe.json

# 2. The sources (build.rs compiles proto/ with protox: no system protoc needed).
COPY . .
RUN cargo build --release --locked --bin authd \
    && install -D -m 0755 target/release/authd /out/usr/local/bin/authd \
    && install -d -m 0750 /out/var/lib/authd

# ---- runtime ---------------------------------------------------------------------
# glibc, libgcc and CA certificates, no shell; runs as uid/gid 65532 ("nonroot").
FROM ${RUNTIME_IMAGE}

# OCI image annotations (https://specs.opencontainers.org/image-spec/annotations/).
# Set the build's own with --build-arg VERSION=… REVISION=$(git rev-parse HEAD)
# CREATED=$(date -u +%Y-%m-%dT%H:%M:%SZ) SOURCE=<repository URL>.
ARG RUNTIME_IMAGE
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
ARG SOURCE=unknown
LABEL org.opencontainers.image.title="authd" \
      org.opencontainers.image.description="A small, fast gRPC authentication and authorization service" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.source="${SOURCE}" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.base.name="${RUNTIME_IMAGE}"

COPY --from=builder /out/usr/local/bin/authd /usr/local/bin/authd
COPY --from=builder --chown=65532:65532 /out/var/lib/authd /var/lib/authd

ENV AUTHD_DATABASE_URL="sqlite:///var/lib/authd/authd.db?mode=rwc" \
    AUTHD_LISTEN="0.0.0.0:50051" \
    AUTHD_HTTP_LISTEN="0.0.0.0:9090"

USER 65532:65532
WORKDIR /var/lib/authd
VOLUME ["/var/lib/authd"]

# 50051: gRPC (AuthService, AdminService, health, reflection).
# 9090: HTTP (/.well-known/jwks.json, /metrics).
EXPOSE 50051 9090

# Readiness as gRPC health reports it: SERVING while the database answers.
# (Kubernetes ignores HEALTHCHECK; it uses the probes in deploy/kubernetes/.)
HEALTHCHECK --interval=10s --timeout=5s --start-period=20s --retries=3 \
    CMD ["/usr/local/bin/authd", "health", "--addr", "127.0.0.1:50051"]

# Other subcommands run the same way, for example:
#   docker run --rm -v authd-data:/var/lib/authd authd:0.1.0 migrate
#   printf '%s' 'PASSWORD' | docker run --rm -i -v authd-data:/var/lib/authd authd:0.1.0 \
#       user create --username root --email root@example.com --role admin --password-stdin
ENTRYPOINT ["/usr/local/bin/authd"]
CMD ["serve"]
