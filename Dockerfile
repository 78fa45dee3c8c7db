# Deputy's container image, for builds with a Docker engine:
#   docker build --build-arg VERSION=$(git describe --tags --always) \
#     --build-arg REVISION=$(git rev-parse HEAD) -t deputy .
# `make image` builds the same image without an engine (cmd/deputy-image);
# cmd/deputy-image/image_test.go keeps the two in step.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY cmd/ cmd/
COPY sidecar/ sidecar/
COPY policies/ policies/
ARG VERSION=unknown
ARG REVISION=unknown
# A static binary (no libc): it runs on a base with no shared libraries.
# Built as the Makefile builds it (see GO_BUILD there for grpcnotrace).
RUN CGO_ENABLED=0 go build -trimpath -tags grpcnotrace \
      -ldflags "-s -w -X github.com/deputyhq/deputy/sidecar/buildinfo.version=${VERSION} -X github.com/deputyhq/deputy/sidecar/buildinfo.commit=${REVISION}" \
      -o /out/deputy ./cmd/deputy \
 && mkdir -p /out/policies \
 && cd policies && find . \( -name '*.rego' ! -name '*_test.rego' -o -name '*.json' -o -name '*.yaml' -o -name '*.yml' \) \
      -exec cp --parents {} /out/policies/ \;

# distroless static: CA certificates, /etc/passwd with nonroot (65532), a
# sticky /tmp, and nothing else: no shell, no package manager.
FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=unknown
ARG REVISION=unknown
ARG CREATED=1970-01-01T00:00:00Z
LABEL org.opencontainers.image.title="deputy" \
      org.opencontainers.image.description="Authorization sidecar for Envoy with delegated identity" \
      org.opencontainers.image.source="https://github.com/deputyhq/deputy" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}"
COPY --from=build /out/deputy /usr/local/bin/deputy
COPY --from=build /out/policies/ /etc/deputy/policies/
ENV SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
WORKDIR /home/nonroot
USER 65532:65532
# gRPC ext_authz, HTTP (ext_authz, API, JWKS), metrics and health.
EXPOSE 8181/tcp 9090/tcp 9191/tcp
ENTRYPOINT ["/usr/local/bin/deputy"]
CMD ["serve"]
