# Stand-in for the official node:<version>-<suite>-slim images: this
# machine's Node.js and npm (its version, not the tag's) at the official
# image's paths. Node trusts the system's CA certificates too (the official
# image relies on Node's built-in roots only), so a registry behind this
# machine's TLS proxy is reachable.
#
# Built by `cargo xtask images`; the context holds `node` and `npm/`.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt
CMD ["node"]
