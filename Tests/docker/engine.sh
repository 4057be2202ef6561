# Container engine set-up for Tests/docker/run.sh (sourced, not run).
#
# engine_init          picks the engine and its flags: ENGINE (the command, as an array),
#                      BUILD_FLAGS and RUN_FLAGS (arrays), ENGINE_NAME; returns 1 with
#                      SKIP_REASON set when no engine is usable on this machine.
# engine_probe         runs `true` in a container of debian:bookworm-slim and finds ulimits the
#                      runtime accepts; returns 1 with SKIP_REASON set when no container can run.
# ensure_base_images   makes sure debian:bookworm-slim and swift:6.3-bookworm are in the engine's
#                      storage: already there, else loaded from the cache, else pulled, else
#                      made locally (stand-ins, see below) and saved to the cache.
#
# Stand-ins. CI machines reach Debian's mirror and PyPI but not Docker Hub, so the two base images
# of the Dockerfile are made here when they cannot be pulled:
#   debian:bookworm-slim  debootstrap --variant=minbase bookworm, with the slim image's dpkg
#                         excludes and apt sources, imported as docker.io/library/debian:bookworm-slim;
#                         plus this machine's local CA certificates (/usr/local/share/ca-certificates:
#                         CI reaches PyPI through a TLS-inspecting egress proxy), which a stage that
#                         installs ca-certificates then trusts, as on the host.
#   swift:6.3-bookworm    that base + the packages of the official swift image, + the toolchain
#                         installed on this machine (found through `which swift`) copied into /usr
#                         as the official image has it (minus debugger, IDE and doc tools a build
#                         does not use), + this machine's git `url.<dir>.insteadOf` mirrors of
#                         GitHub (SwiftPM fetches the package's dependencies through git; the
#                         official image reaches github.com, these machines reach a local mirror).
# Both carry the label org.apus.stand-in=<key>; an image without that label is a real one and is
# used as it is. The cache (APUS_CONTAINER_CACHE, default .cache/containers/, gitignored) keeps
# them as `podman save` archives, so a fresh engine storage loads them in seconds; a stand-in is
# remade when its key changes (another toolchain or recipe).
#
# Engines: podman (preferred: what CI has) or docker. Podman runs with the runc runtime when it is
# installed (crun fails on cgroup v1 layouts such as CI's), the cgroupfs cgroup manager and file
# events when systemd is not PID 1, and ulimits clamped to what this machine allows (the runtime
# cannot raise a hard limit without CAP_SYS_RESOURCE, and podman's defaults ask for more).

CACHE_DIR=${APUS_CONTAINER_CACHE:-$ROOT/.cache/containers}
DEBIAN_IMAGE=docker.io/library/debian:bookworm-slim
SWIFT_IMAGE=docker.io/library/swift:6.3-bookworm
DEBIAN_MIRROR=${APUS_DEBIAN_MIRROR:-http://deb.debian.org/debian}
# Bump when a stand-in recipe below changes.
STANDIN_RECIPE=2
STANDIN_LABEL=org.apus.stand-in

ENGINE=()
BUILD_FLAGS=()
RUN_FLAGS=()
ENGINE_NAME=""
SKIP_REASON=""

log() { echo "docker-test: $*"; }

engine_init() {
    local want=${APUS_CONTAINER_ENGINE:-}
    if [ -z "$want" ]; then
        if command -v podman >/dev/null 2>&1; then
            want=podman
        elif command -v docker >/dev/null 2>&1; then
            want=docker
        else
            SKIP_REASON="no container engine: neither podman nor docker is installed (on Debian: apt-get install podman runc debootstrap; \`make test-docker\` does it when it can)"
            return 1
        fi
    fi
    command -v "$want" >/dev/null 2>&1 || { SKIP_REASON="APUS_CONTAINER_ENGINE=$want is not installed"; return 1; }
    ENGINE_NAME=$want
    if [ "$want" = podman ]; then
        ENGINE=(podman)
        if command -v runc >/dev/null 2>&1; then ENGINE+=(--runtime runc); fi
        if [ ! -d /run/systemd/system ]; then
            ENGINE+=(--cgroup-manager cgroupfs --events-backend file)
            # No systemd timers for the HEALTHCHECK (the test runs it with `podman healthcheck run`).
            RUN_FLAGS+=(--log-driver k8s-file --health-interval disable)
        fi
        # docker format: the OCI image format has no HEALTHCHECK.
        BUILD_FLAGS+=(--format docker --pull=never)
    else
        ENGINE=(docker)
    fi
    local out
    if ! out=$("${ENGINE[@]}" info 2>&1 >/dev/null); then
        SKIP_REASON="$want is installed but \`$want info\` fails: $(echo "$out" | tail -3)"
        return 1
    fi
    return 0
}

# Hard limits of this shell, as numbers ("" when unlimited).
_hard_limit() {
    local v
    v=$(ulimit -H "$1")
    [ "$v" = unlimited ] && v=""
    echo "$v"
}

# Finds nofile/nproc limits the runtime can set (podman's defaults, 1048576 open files and its
# own NPROC ceiling, exceed what a container may get on machines without CAP_SYS_RESOURCE).
engine_probe() {
    local nofile nproc out candidate
    nofile=$(_hard_limit -n)
    nproc=$(_hard_limit -u)
    [ -n "$nofile" ] && [ "$nofile" -gt 1048576 ] && nofile=1048576
    local limits=()
    [ -n "$nofile" ] && limits+=(--ulimit "nofile=$nofile:$nofile")
    for candidate in "$nproc" 32768 4096; do
        local try=("${limits[@]}")
        if [ -n "$candidate" ]; then
            [ -n "$nproc" ] && [ "$candidate" -gt "$nproc" ] && continue
            try+=(--ulimit "nproc=$candidate:$candidate")
        fi
        if out=$("${ENGINE[@]}" run --rm "${RUN_FLAGS[@]}" "${try[@]}" "$DEBIAN_IMAGE" true 2>&1); then
            RUN_FLAGS+=("${try[@]}")
            BUILD_FLAGS+=("${try[@]}")
            [ ${#try[@]} -gt 0 ] && log "ulimits for containers: ${try[*]}"
            return 0
        fi
        case "$out" in
            *rlimit*|*ulimit*) continue ;;
            *) break ;;
        esac
    done
    SKIP_REASON="$ENGINE_NAME cannot run a container here: $(echo "$out" | tail -3)"
    return 1
}

_image_exists() { "${ENGINE[@]}" image inspect "$1" >/dev/null 2>&1; }

# The stand-in key of an image ("" for a real image, "-" when absent).
_image_key() {
    _image_exists "$1" || { echo -; return; }
    "${ENGINE[@]}" image inspect --format "{{ index .Config.Labels \"$STANDIN_LABEL\" }}" "$1" 2>/dev/null \
        | sed 's/^<no value>$//'
}

# ensure IMAGE KEY MAKER ARCHIVE
_ensure_image() {
    local image=$1 key=$2 maker=$3 archive=$4 have
    have=$(_image_key "$image")
    if [ "$have" = "" ]; then log "$image: present (not a stand-in)"; return 0; fi
    if [ "$have" = "$key" ]; then log "$image: present (stand-in)"; return 0; fi
    if [ -f "$archive" ] && [ "$(cat "$archive.key" 2>/dev/null)" = "$key" ]; then
        local t0=$SECONDS
        if "${ENGINE[@]}" load -q -i "$archive" >/dev/null && [ "$(_image_key "$image")" = "$key" ]; then
            log "$image: loaded from $archive in $((SECONDS - t0)) s"
            return 0
        fi
        log "$image: $archive did not load; making it again"
    fi
    if [ "$have" = - ] && [ "${APUS_STANDIN_ONLY:-0}" != 1 ] \
        && timeout 600 "${ENGINE[@]}" pull -q "$image" >/dev/null 2>&1; then
        log "$image: pulled"
        return 0
    fi
    if [ "$ENGINE_NAME" != podman ]; then
        log "$image: cannot be pulled here, and the local stand-ins are made with podman only"
        return 1
    fi
    log "$image: cannot be pulled here; making a local stand-in"
    local t0=$SECONDS
    "$maker" "$key" || return 1
    mkdir -p "$CACHE_DIR"
    rm -f "$archive" "$archive.key"
    local quiet=()
    [ "$ENGINE_NAME" = podman ] && quiet=(-q)
    "${ENGINE[@]}" save "${quiet[@]}" -o "$archive.tmp" "$image" >/dev/null && mv "$archive.tmp" "$archive" \
        && echo "$key" >"$archive.key"
    log "$image: stand-in made in $((SECONDS - t0)) s, saved to $archive ($(du -h "$archive" | cut -f1))"
}

LOCAL_CA_DIR=/usr/local/share/ca-certificates

_debian_key() {
    local cas
    cas=$(find "$LOCAL_CA_DIR" -name '*.crt' -type f 2>/dev/null | sort | xargs -r cat | sha256sum | cut -c1-12)
    echo "debootstrap-minbase-bookworm-ca$cas-r$STANDIN_RECIPE"
}

_make_debian() {
    local key=$1 tmp rootfs
    command -v debootstrap >/dev/null 2>&1 || { log "debootstrap is not installed (apt-get install debootstrap)"; return 1; }
    [ "$(id -u)" = 0 ] || { log "debootstrap needs root"; return 1; }
    mkdir -p "$CACHE_DIR"
    tmp=$(mktemp -d "$CACHE_DIR/debian-rootfs.XXXXXX")
    rootfs=$tmp/rootfs
    log "debootstrap --variant=minbase bookworm from $DEBIAN_MIRROR"
    if ! debootstrap --variant=minbase --arch=amd64 bookworm "$rootfs" "$DEBIAN_MIRROR" >"$tmp/debootstrap.log" 2>&1; then
        tail -20 "$tmp/debootstrap.log"
        rm -rf "$tmp"
        return 1
    fi
    # What the official slim image does on top of minbase: no docs/man/locales from later
    # installs, apt caches dropped after each install, deb822 sources with updates and security.
    cat >"$rootfs/etc/dpkg/dpkg.cfg.d/docker" <<'EOF'
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/groff/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-exclude /usr/share/lintian/*
path-exclude /usr/share/linda/*
EOF
    cat >"$rootfs/etc/apt/apt.conf.d/docker-clean" <<'EOF'
DPkg::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
APT::Update::Post-Invoke { "rm -f /var/cache/apt/archives/*.deb /var/cache/apt/archives/partial/*.deb /var/cache/apt/*.bin || true"; };
Dir::Cache::pkgcache "";
Dir::Cache::srcpkgcache "";
EOF
    printf 'Acquire::Languages "none";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-languages"
    if [ -d "$LOCAL_CA_DIR" ]; then
        mkdir -p "$rootfs$LOCAL_CA_DIR"
        find "$LOCAL_CA_DIR" -name '*.crt' -type f -exec cp {} "$rootfs$LOCAL_CA_DIR/" \;
    fi
    rm -f "$rootfs/etc/apt/sources.list"
    cat >"$rootfs/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $DEBIAN_MIRROR
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: ${DEBIAN_MIRROR%/debian}/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
    # The same excludes applied to what debootstrap installed (docs but copyrights, man pages,
    # locales), as the slim image has it.
    find "$rootfs/usr/share/doc" -mindepth 1 -not -type d -not -name copyright -delete
    find "$rootfs/usr/share/doc" -mindepth 1 -type d -empty -delete
    rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb \
        "$rootfs"/usr/share/man/* "$rootfs"/usr/share/info/* "$rootfs"/usr/share/locale/* \
        "$rootfs"/usr/share/groff/* "$rootfs"/usr/share/lintian/* \
        "$rootfs"/var/log/*.log "$rootfs"/var/log/apt/* "$rootfs"/etc/hostname "$rootfs"/etc/resolv.conf
    : >"$rootfs/etc/machine-id"
    tar -C "$rootfs" --numeric-owner -cf - . \
        | "${ENGINE[@]}" import -q \
            --change 'CMD ["bash"]' \
            --change "LABEL $STANDIN_LABEL=$key" \
            - "$DEBIAN_IMAGE" >/dev/null
    local rc=$?
    rm -rf "$tmp"
    return $rc
}

# The toolchain folder that holds bin/swift (e.g. /opt/swift/usr).
_toolchain_dir() {
    local swift
    swift=$(command -v swift 2>/dev/null) || return 1
    dirname "$(dirname "$(readlink -f "$swift")")"
}

_swift_key() {
    local version
    version=$(swift --version 2>/dev/null | head -1)
    echo "toolchain[$version]-$(_toolchain_dir)-on-$(_debian_key)"
}

_make_swift() {
    local key=$1 toolchain ctx
    toolchain=$(_toolchain_dir) || { log "no swift on PATH: cannot make the swift:6.3-bookworm stand-in"; return 1; }
    case "$(swift --version 2>/dev/null | head -1)" in
        *"Swift version 6.3"*) ;;
        *) log "note: the stand-in for swift:6.3-bookworm gets this machine's toolchain: $(swift --version 2>/dev/null | head -1)" ;;
    esac
    mkdir -p "$CACHE_DIR"
    ctx=$(mktemp -d "$CACHE_DIR/swift-ctx.XXXXXX")
    local volumes=(-v "$toolchain:/mnt/toolchain:ro")
    # GitHub mirrors of git's system config (url.<local dir>.insteadOf), copied to the same path.
    local mirror_cmds="true" n=0 base
    while read -r name value; do
        base=${name#url.}
        base=${base%.insteadof}
        case "$base" in
            /*) ;;
            *) continue ;;
        esac
        if [ -d "$base" ] && [[ " ${volumes[*]} " != *" $base:"* ]]; then
            volumes+=(-v "$base:/mnt/mirror$n:ro")
            mirror_cmds="$mirror_cmds && mkdir -p '$base' && cp -a /mnt/mirror$n/. '$base/'"
            n=$((n + 1))
        fi
        mirror_cmds="$mirror_cmds && git config --system --add 'url.$base.insteadOf' '$value'"
    done < <(git config --system --get-regexp '^url\..*\.insteadof$' 2>/dev/null)
    # The official image's packages (swift-docker, 6.x bookworm), without recommends but with the
    # C library headers gcc would have recommended.
    cat >"$ctx/Containerfile" <<EOF
FROM $DEBIAN_IMAGE
LABEL $STANDIN_LABEL="$key"
RUN apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \\
    binutils gcc libc6-dev libgcc-12-dev libstdc++-12-dev libicu-dev libcurl4-openssl-dev \\
    libedit-dev libsqlite3-dev libncurses-dev libpython3-dev libxml2-dev uuid-dev zlib1g-dev \\
    pkg-config tzdata git ca-certificates \\
    && rm -rf /var/lib/apt/lists/*
RUN tar -C /mnt/toolchain -cf - \\
        --exclude='./bin/lldb*' --exclude=./bin/sourcekit-lsp --exclude=./bin/clangd \\
        --exclude=./bin/docc --exclude=./bin/swift-format --exclude='./lib/liblldb.so*' \\
        --exclude=./lib/libsourcekitdInProc.so --exclude=./lib/swift/embedded . \\
    | tar -C /usr -xf - \\
    && swift --version
RUN $mirror_cmds
CMD ["bash"]
EOF
    "${ENGINE[@]}" build "${BUILD_FLAGS[@]}" "${volumes[@]}" -t "$SWIFT_IMAGE" -f "$ctx/Containerfile" "$ctx" \
        >"$ctx/build.log" 2>&1
    local rc=$?
    [ $rc = 0 ] || tail -30 "$ctx/build.log"
    rm -rf "$ctx"
    return $rc
}

ensure_base_images() {
    _ensure_image "$DEBIAN_IMAGE" "$(_debian_key)" _make_debian "$CACHE_DIR/debian-bookworm-slim.tar" || return 1
    if [ -z "${ENGINE_PROBED:-}" ]; then
        engine_probe || return 2
        ENGINE_PROBED=1
    fi
    _ensure_image "$SWIFT_IMAGE" "$(_swift_key)" _make_swift "$CACHE_DIR/swift-6.3-bookworm.tar" || return 1
}
