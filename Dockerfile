# syntax=docker/dockerfile:1
# aiserve's container image: the release binary, the bundled model repository (models/) and ONNX
# Runtime's library (from PyPI's wheel, sha256-checked by .ci/fetch-onnxruntime.sh), on Debian 12
# slim, running as an unprivileged user.
#
#   docker build -t aiserve:0.1.0 .
#   docker run --rm -p 8080:8080 -p 8001:8001 aiserve:0.1.0
#
# Ports: 8080 HTTP (KServe v2 REST, OpenAI, Anthropic, TF Serving REST, /classify, /metrics, the
# playground), 8001 gRPC (KServe v2, TF Serving, health). Every `serve` flag is also an AISERVE_*
# variable: AISERVE_REPO (a directory or s3://, gs://, az://), AISERVE_API_KEYS_FILE,
# AISERVE_DRAIN_DELAY_MS, ... The repository mirror of object storage goes to /var/cache/aiserve.

FROM rust:1.95-slim-bookworm AS build
# Debian's packages are not pinned: its security updates replace the old versions in the archive.
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip ca-certificates \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN .ci/fetch-onnxruntime.sh /opt/assets > /opt/onnxruntime-path \
 && cp "$(cat /opt/onnxruntime-path)" /opt/libonnxruntime.so
RUN cargo build --release --locked --bin aiserve \
 && cp target/release/aiserve /opt/aiserve \
 && strip /opt/aiserve

FROM debian:bookworm-slim
# CA certificates: TLS to object storage and to the Hugging Face Hub (`aiserve pull`).
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --home-dir /var/lib/aiserve --create-home aiserve \
 && mkdir -p /var/cache/aiserve \
 && chown aiserve /var/cache/aiserve
COPY --from=build /opt/aiserve /usr/local/bin/aiserve
COPY --from=build /opt/libonnxruntime.so /usr/local/lib/libonnxruntime.so
COPY models /models
ENV AISERVE_ADDR=0.0.0.0:8080 \
    AISERVE_GRPC_ADDR=0.0.0.0:8001 \
    AISERVE_REPO=/models \
    AISERVE_REPO_CACHE=/var/cache/aiserve \
    AISERVE_ONNXRUNTIME=/usr/local/lib/libonnxruntime.so
USER 10001
EXPOSE 8080 8001
HEALTHCHECK --interval=10s --timeout=4s --start-period=30s --retries=3 CMD ["aiserve", "health", "--timeout", "3s"]
ENTRYPOINT ["aiserve"]
CMD ["serve"]
