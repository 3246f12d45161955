# syntax=docker/dockerfile:1
# Multi-stage build: a static ctxgate binary on distroless, running as non-root.
#   docker build -t ctxgate --build-arg VERSION=v0.1.0 .
#   docker run -p 8080:8080 -v $PWD/ctxgate.yaml:/etc/ctxgate/ctxgate.yaml:ro ctxgate
# In a container set server.listen to "0.0.0.0:8080" and server.public_url to
# the URL clients use: the default listens on loopback only.

FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/ctxgate .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/ctxgate /usr/local/bin/ctxgate
USER nonroot:nonroot
EXPOSE 8080 9090
ENTRYPOINT ["/usr/local/bin/ctxgate"]
CMD ["serve", "--config", "/etc/ctxgate/ctxgate.yaml"]
