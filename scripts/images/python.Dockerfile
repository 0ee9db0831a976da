# Stand-in for the official python:<version>-slim-<suite> images: Debian's
# own Python 3 and pip (the suite's version, not the tag's), with `python`
# and `pip` on PATH as in the official image.
#
# Built by `cargo xtask images`; no context.
ARG BASE
FROM ${BASE}
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-pip python-is-python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/* \
 && python --version && pip --version
CMD ["python3"]
