# Stand-in for the official rust:<version>-<suite> images (no public registry
# here): the Debian base from debootstrap, Debian's C toolchain, and this
# machine's own Rust toolchain (the release the Dockerfiles name) at the paths
# and with the environment of the official image. No rustup: cargo, rustc and
# rustdoc are links into the toolchain.
#
# Built by `cargo xtask images`; the context holds `toolchain/`.
ARG BASE
FROM ${BASE}
ARG PACKAGES
ARG TOOLCHAIN
ARG RUST_VERSION
RUN apt-get update \
 && apt-get install -y --no-install-recommends ${PACKAGES} \
 && rm -rf /var/lib/apt/lists/*
ENV RUSTUP_HOME=/usr/local/rustup \
    CARGO_HOME=/usr/local/cargo \
    PATH=/usr/local/cargo/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    RUST_VERSION=${RUST_VERSION}
COPY toolchain /usr/local/rustup/toolchains/${TOOLCHAIN}
RUN mkdir -p /usr/local/cargo/bin \
 && for tool in cargo rustc rustdoc; do \
      ln -s "/usr/local/rustup/toolchains/${TOOLCHAIN}/bin/${tool}" "/usr/local/cargo/bin/${tool}"; \
    done \
 && cargo --version && rustc --version
