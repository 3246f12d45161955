# syntax=docker/dockerfile:1
# Multi-stage build: a static ctxgate binary on distroless/static, running as
# a non-root user, with the shipped policy and a default configuration:
#
#   docker build -t ctxgate --build-arg VERSION=v0.1.0 \
#     --build-arg REVISION="$(git rev-parse HEAD)" .
#   docker run --read-only -p 8080:8080 \
#     -e CTXGATE_UPSTREAM_URL=http://mcp.internal:3001/mcp \
#     -e CTXGATE_API_KEY_SHA256="$(printf %s "$KEY" | ctxgate hash-key)" ctxgate
#
# deploy/docker/ctxgate.yaml lists the environment variables it reads; mount
# your own file at /etc/ctxgate/ctxgate.yaml for anything more.
# deploy/docker_test.go checks this file without a Docker engine: it runs the
# build command below and the image's layout as the image's user.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
# Static (CGO_ENABLED=0): the distroless/static base has no libc.
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/ctxgate .

FROM gcr.io/distroless/static-debian12:nonroot
ARG VERSION=dev
ARG REVISION=unknown
LABEL org.opencontainers.image.title="ctxgate" \
      org.opencontainers.image.description="A hardened reverse proxy (gateway) for the Model Context Protocol" \
      org.opencontainers.image.source="https://github.com/ctxgate/ctxgate" \
      org.opencontainers.image.documentation="https://github.com/ctxgate/ctxgate#deploying" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.base.name="gcr.io/distroless/static-debian12:nonroot"
COPY --from=build /out/ctxgate /usr/local/bin/ctxgate
# Owned by root and not writable by the user below: the process cannot alter
# its own policy or configuration.
COPY policies/ /etc/ctxgate/policies/
COPY deploy/docker/ctxgate.yaml /etc/ctxgate/ctxgate.yaml
# Numeric, so that Kubernetes' runAsNonRoot can verify it (a user name
# cannot be checked without the image's /etc/passwd). 65532 is distroless's
# nonroot.
USER 65532:65532
# 8080: the MCP routes. 9090: the admin listener, on the container's
# loopback unless CTXGATE_ADMIN_LISTEN (with CTXGATE_ADMIN_TOKEN_SHA256) says
# otherwise.
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/ctxgate"]
CMD ["serve", "--config", "/etc/ctxgate/ctxgate.yaml"]
