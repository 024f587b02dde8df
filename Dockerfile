# syntax=docker/dockerfile:1
# logfleet: one image, four binaries (ingest-worker, archive-worker, query-api, logctl).
#   docker build -t logfleet .
#   docker run --rm logfleet                  # ingest-worker (the default CMD)
#   docker run --rm logfleet archive-worker
#   docker run --rm logfleet query-api
#   docker run --rm logfleet logctl --help

# ---- build --------------------------------------------------------------------------------
# The toolchain Cargo.toml pins (rust-version 1.95), by full version.
FROM rust:1.95.0-bookworm AS builder
WORKDIR /src
# Release profile for the image without touching Cargo.toml: symbols stripped, thin LTO.
ENV CARGO_PROFILE_RELEASE_STRIP=true \
    CARGO_PROFILE_RELEASE_LTO=thin
# Every workspace member must be present for cargo to load the workspace, including the
# integration-test crate in tests/ (it is not built here). config/default.toml is compiled
# into the binaries with include_str!, so config/ is needed at build time only.
COPY Cargo.toml Cargo.lock ./
COPY config ./config
COPY crates ./crates
COPY tests ./tests
# Only the four binaries (--bin): no other bin or bench target of their packages.
# Cache mounts keep the registry and target/ between builds (BuildKit). target/ lives only in
# the cache, so the binaries are copied out to /out in the same RUN.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/usr/local/cargo/git,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --release --locked \
      -p ingest-worker -p archive-worker -p query-api -p logctl \
      --bin ingest-worker --bin archive-worker --bin query-api --bin logctl \
 && install -D -m 0755 -t /out \
      target/release/ingest-worker target/release/archive-worker target/release/query-api target/release/logctl

# ---- runtime ------------------------------------------------------------------------------
FROM debian:bookworm-slim AS runtime
# ca-certificates: TLS to AWS S3 / MongoDB Atlas / AMQPS (rustls reads the system roots).
# No curl or wget: container health checks use logfleet-probe (bash /dev/tcp), Kubernetes
# probes are httpGet.
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
RUN groupadd --system --gid 10001 logfleet \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin logfleet
COPY --from=builder /out/ /usr/local/bin/
# `logfleet-probe http://127.0.0.1:9101/readyz`: 0 on HTTP 200 (docker-compose.yml health checks).
COPY --chmod=0755 deploy/docker/logfleet-probe /usr/local/bin/logfleet-probe
# Numeric so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER 10001:10001
# No ENTRYPOINT: the command is the binary, so one image serves every role.
# The workers drain on SIGTERM (the Docker default stop signal) and run as PID 1.
CMD ["ingest-worker"]
