# Stand-in for gcr.io/distroless/cc-debian12:nonroot: the files of the Debian
# packages distroless' `cc` image is made of (glibc, libgcc, libstdc++, time
# zones, netbase), the CA bundle, and the users root, nobody and nonroot
# (65532); no shell, no package manager. Run as nonroot in /home/nonroot.
#
# Built by `cargo xtask images`; no context.
ARG BASE
FROM ${BASE} AS packages
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates libstdc++6 tzdata netbase \
 && rm -rf /var/lib/apt/lists/*
# Merged /usr as in Debian 12: /lib, /bin… are links into /usr. Only files
# and links of the packages are copied (their directories come with them).
RUN mkdir -p /out/usr/bin /out/usr/sbin /out/usr/lib /out/usr/lib64 /out/etc/ssl/certs \
             /out/home/nonroot /out/tmp /out/var/lib \
 && for dir in bin sbin lib lib64; do ln -s "usr/${dir}" "/out/${dir}"; done \
 && chmod 1777 /out/tmp \
 && dpkg -L libc6 libgcc-s1 libstdc++6 tzdata netbase \
    | while read -r path; do \
        if [ -L "$path" ] || [ -f "$path" ]; then echo "${path#/}"; fi; \
      done > /files \
 && printf '%s\n' etc/ssl/certs/ca-certificates.crt etc/nsswitch.conf etc/ld.so.cache \
      etc/os-release usr/lib/os-release >> /files \
 && tar -C / --no-recursion -cf - -T /files | tar -C /out --keep-directory-symlink -xf - \
 && printf '%s\n' 'root:x:0:0:root:/root:/sbin/nologin' \
      'nobody:x:65534:65534:nobody:/nonexistent:/sbin/nologin' \
      'nonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin' > /out/etc/passwd \
 && printf '%s\n' 'root:x:0:' 'nobody:x:65534:' 'nonroot:x:65532:' > /out/etc/group \
 && chown 65532:65532 /out/home/nonroot

FROM scratch
COPY --from=packages /out/ /
USER 65532
WORKDIR /home/nonroot
ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt
