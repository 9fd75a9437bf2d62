# syslog-sink: multi-stage build, small non-root runtime image.
#   docker build -t syslog-sink .
#   docker run -p 1514:1514 -v syslog-sink-out:/var/lib/syslog-sink/out syslog-sink
FROM rust:1-slim-bookworm AS build
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY benches ./benches
RUN cargo build --release --locked --bin syslog-sink \
    && strip target/release/syslog-sink

FROM debian:bookworm-slim
RUN useradd --system --uid 10514 --home-dir /var/lib/syslog-sink --create-home syslog-sink
COPY --from=build /src/target/release/syslog-sink /usr/local/bin/syslog-sink
COPY config/syslog-sink.toml /etc/syslog-sink/syslog-sink.toml
USER syslog-sink
WORKDIR /var/lib/syslog-sink
# Records go to /var/lib/syslog-sink/out/events.jsonl (the default config's relative path).
VOLUME ["/var/lib/syslog-sink/out"]
EXPOSE 1514 6514
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/syslog-sink"]
CMD ["serve", "--config", "/etc/syslog-sink/syslog-sink.toml"]
