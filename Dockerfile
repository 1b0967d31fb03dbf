# Production image of chunkd (with the chunkup client beside it).
# Build: docker build -t chunkd .
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins

FROM debian:bookworm-slim
RUN apt-get update \
 && apt-get install -y --no-install-recommends libpq5 ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /data chunkd \
 && mkdir -p /data && chown chunkd /data
COPY --from=build /src/target/release/chunkd /src/target/release/chunkup /usr/local/bin/
USER chunkd
ENV CHUNKD_LISTEN=0.0.0.0:8080 \
    CHUNKD_DATA_DIR=/data \
    RUST_LOG=info
VOLUME /data
EXPOSE 8080
# Ready: the database answers and the data volume takes a new file
# (GET /healthz is the liveness probe, which touches neither).
HEALTHCHECK --interval=10s --timeout=3s --retries=3 \
  CMD curl -fsS http://127.0.0.1:8080/readyz || exit 1
ENTRYPOINT ["chunkd"]
CMD ["serve"]
