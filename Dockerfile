# syntax=docker/dockerfile:1
# One image for the controller and the node agent.
#
#   docker build -t sofort:0.1.0 .
#
# The runtime base is debian:bookworm-slim rather than distroless because the
# agent's `command` reboot method and host patch commands run `nsenter`
# (util-linux, part of every Debian base). The image runs as an unprivileged
# user by default; the agent DaemonSet overrides the user where it must.
#
# Built with `--no-default-features`: the `sandbox` feature (the API emulator
# and the `sofort sandbox` demo) is for development and tests only and is not
# linked into the image.

ARG RUST_VERSION=1.95

FROM rust:${RUST_VERSION}-slim-bookworm AS build
WORKDIR /src
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    --mount=type=cache,target=/src/target,sharing=locked \
    cargo build --profile small --locked --no-default-features --package sofort --bin sofort \
 && install -D -m 0755 target/small/sofort /out/sofort

FROM debian:bookworm-slim AS runtime
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /out/sofort /usr/local/bin/sofort
USER 65532:65532
ENTRYPOINT ["sofort"]
CMD ["--help"]
