# syntax=docker/dockerfile:1
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# oshirase_build_info and `oshirase version` show these
# (docker build --build-arg VERSION=v1.2.3 --build-arg REVISION=$(git rev-parse HEAD) .).
ARG VERSION=""
ARG REVISION=""
RUN CGO_ENABLED=0 go build -trimpath \
    -ldflags="-s -w -X github.com/oshirase/oshirase/metrics.version=${VERSION} -X github.com/oshirase/oshirase/metrics.revision=${REVISION}" \
    -o /out/oshirase ./cmd/oshirase

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/oshirase /oshirase
USER nonroot
ENTRYPOINT ["/oshirase"]
CMD ["serve"]
