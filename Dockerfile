# Sluice image: a static binary on a distroless base, run as non-root.
#   docker build -t sluice .
#   docker run -p 8080:8080 -e OPENAI_API_KEY -e SLUICE_DEMO_KEY sluice
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X main.version=${VERSION}" -o /out/sluice ./cmd/sluice

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/sluice /usr/local/bin/sluice
COPY configs/sluice.yaml configs/policies.yaml /etc/sluice/
# Inside a container the listeners must face outward.
ENV SLUICE_ADDR=0.0.0.0:8080 SLUICE_ADMIN_ADDR=0.0.0.0:9090 \
    SLUICE_CONFIG=/etc/sluice/sluice.yaml SLUICE_POLICIES=/etc/sluice/policies.yaml SLUICE_LOG_JSON=1 \
    SLUICE_TRANSCRIPTS_DIR=/home/nonroot/transcripts SLUICE_SPOOL_DIR=/home/nonroot/spool
# Transcripts (JSONL without ClickHouse) and the ClickHouse outage spool live
# in the non-root user's home: mount a volume there to keep them.
VOLUME ["/home/nonroot"]
EXPOSE 8080 9090
USER nonroot:nonroot
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s CMD ["/usr/local/bin/sluice", "healthcheck", "-addr", "127.0.0.1:9090"]
ENTRYPOINT ["/usr/local/bin/sluice"]
CMD ["serve"]
