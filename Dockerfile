# syntax=docker/dockerfile:1
# Multi-stage build: compile in the Rust image, run in a slim Debian as an unprivileged user.

# The browser client (web/): every dependency from npm, locked in web/package-lock.json.
FROM node:22-bookworm-slim AS web
WORKDIR /web
COPY web/package.json web/package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY web/ ./
RUN npm run build

FROM rust:1-bookworm AS build
WORKDIR /src
# Every file Cargo.toml names (the [[bench]] targets too: cargo reads them even for --bins).
# tests/deploy.rs assembles this same context, .dockerignore applied, and runs this build.
COPY Cargo.toml Cargo.lock ./
COPY migrations ./migrations
COPY src ./src
COPY relais-load ./relais-load
COPY benches ./benches
RUN cargo build --release --locked --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates tini \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --home-dir /var/lib/relais --create-home --shell /usr/sbin/nologin relais
COPY --from=build /src/target/release/relais /src/target/release/relais-load /usr/local/bin/
COPY --from=web /web/dist /usr/local/share/relais/web
COPY LICENSE-MIT LICENSE-APACHE /usr/share/doc/relais/
USER relais
WORKDIR /var/lib/relais
ENV RELAIS_DATA_DIR=/var/lib/relais/data \
    RELAIS_MEDIA_DIR=/var/lib/relais/media \
    RELAIS_CERTS_DIR=/var/lib/relais/certs \
    RELAIS_WEB_DIR=/usr/local/share/relais/web
VOLUME ["/var/lib/relais"]
# HTTP, HTTPS, media (UDP and ICE-TCP), TURN (UDP/TCP and TLS)
EXPOSE 3000/tcp 3443/tcp 3479/udp 3479/tcp 3478/udp 3478/tcp 5349/tcp
# Ready when /readyz answers 200 (the database answers), asked by relais itself: the image
# has no curl, and /bin/sh is dash (no /dev/tcp).
HEALTHCHECK --interval=30s --timeout=5s --start-period=20s CMD ["relais", "ready", "--timeout", "3s"]
ENTRYPOINT ["/usr/bin/tini", "--", "relais"]
CMD ["serve"]
