# syntax=docker/dockerfile:1
#
# keyrelay image: the proxy (entrypoint) and keyrelay-mock (for demos and tests).
#
#   docker build -t keyrelay .
#   docker run --rm -p 127.0.0.1:8080:8080 -e GROQ_API_KEYS=gsk_… keyrelay
#
# Config: /etc/keyrelay/keyrelay.toml (KEYRELAY_CONFIG); the one shipped here only sets server
# defaults, so providers come from GROQ_API_KEYS / OPENAI_API_KEYS. Mount your own file there.
# Secrets come only from the environment (`${ENV}` references in the config); none is in the image.
# See deploy/README.md for compose and Kubernetes.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-bookworm AS builder
WORKDIR /build
# Only what the build reads (tests/deploy.rs checks that this is enough for the command below).
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
# The same command .ci/run runs (tests/deploy.rs checks they match).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    cargo build --release --locked --bin keyrelay --bin keyrelay-mock

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/*
# A fixed numeric uid so Kubernetes' runAsNonRoot can verify it.
RUN groupadd --system --gid 10001 keyrelay \
    && useradd --system --uid 10001 --gid keyrelay --home-dir /var/lib/keyrelay \
        --no-create-home --shell /usr/sbin/nologin keyrelay \
    && install -d -o keyrelay -g keyrelay -m 0750 /var/lib/keyrelay \
    && install -d -m 0755 /etc/keyrelay
COPY --from=builder /build/target/release/keyrelay /build/target/release/keyrelay-mock /usr/local/bin/
COPY deploy/image/keyrelay.toml /etc/keyrelay/keyrelay.toml

ENV KEYRELAY_CONFIG=/etc/keyrelay/keyrelay.toml
ENV KEYRELAY_LISTEN=0.0.0.0:8080
# Without [[clients]] (client keys), keyrelay refuses to bind a non-loopback address unless this
# opt-in is set. In a container it is a sidecar: it listens only inside the pod or compose network
# (publish the port on the host's loopback only, e.g. `-p 127.0.0.1:8080:8080`). Configure
# [[clients]] if anything else can reach it.
ENV KEYRELAY_ALLOW_OPEN=1

USER 10001:10001
WORKDIR /var/lib/keyrelay
EXPOSE 8080
HEALTHCHECK --interval=10s --timeout=5s --start-period=5s --retries=3 CMD ["keyrelay", "health"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["keyrelay"]
