# Portcullis container image.
#
#   docker build -t portcullis:0.1.0 .
#   docker run --rm --read-only --tmpfs /var/lib/portcullis -p 9191:9191 -p 8282:8282 \
#     -v "$PWD/policies:/policies:ro" portcullis:0.1.0 \
#     run --server --addr=127.0.0.1:8181 --diagnostic-addr=0.0.0.0:8282 /policies
#
# Stage 1 compiles a release binary; stage 2 is distroless "cc" (glibc and libgcc, no shell,
# no package manager) running as the unprivileged user 65532. The image needs nothing
# writable but the bundle persistence directory (/var/lib/portcullis, mount an emptyDir or a
# tmpfs there), so it runs with a read-only root filesystem.
#
# Validated statically in CI (deploy/validate.sh: hadolint, plus tests/deploy.rs); no Docker
# engine is needed for that.

FROM docker.io/library/rust:1.95-bookworm AS build
WORKDIR /src
# Manifests first, so that a source change does not re-download the dependencies.
COPY Cargo.toml Cargo.lock build.rs ./
COPY src ./src
COPY vendor ./vendor
COPY policies ./policies
RUN cargo build --release --locked --bin portcullis \
 && strip target/release/portcullis \
 && mkdir -p /out/var/lib/portcullis \
 && cp target/release/portcullis /out/portcullis

FROM gcr.io/distroless/cc-debian12:nonroot
COPY --from=build /out/portcullis /usr/local/bin/portcullis
COPY --from=build --chown=65532:65532 /out/var/lib/portcullis /var/lib/portcullis
COPY --from=build /src/policies /policies
WORKDIR /var/lib/portcullis
USER 65532:65532
# 9191 ext_authz gRPC, 8181 HTTP API, 8282 diagnostics (/health, /health?bundles)
EXPOSE 9191 8181 8282
ENTRYPOINT ["/usr/local/bin/portcullis"]
CMD ["run", "--server", "--addr=127.0.0.1:8181", "--diagnostic-addr=0.0.0.0:8282", "/policies"]
