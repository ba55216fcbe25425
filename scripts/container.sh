#!/usr/bin/env bash
# Build the container image, on any machine with podman or docker, with or without a registry.
#
#   scripts/container.sh host    install podman and its helpers from Debian's packages (root; idempotent)
#   scripts/container.sh base    print the base image to build on; with no registry reachable, make one
#                                from Debian's packages (debootstrap) once and keep it
#   scripts/container.sh image   build the project's image on that base (IMAGE, default coze-session-node:dev)
#
# Settings (environment): ENGINE (podman, else docker), IMAGE, BASE (skip the choice of a base),
# CA_BUNDLE (the CA certificates pip trusts inside the build; default: this host's bundle, mounted as a
# build secret for the one pip step, never stored in the image).
# With podman, CONTAINERS_CONF points at a containers.conf written under var/podman/: modest ulimits
# (podman's defaults are higher than a host's hard limits often are, and raising those needs
# CAP_SYS_RESOURCE, which a CI machine's root may lack) and the runc runtime (crun refuses hybrid
# cgroup hierarchies). `make test-image` runs its containers with the same file.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${IMAGE:-coze-session-node:dev}
REGISTRY_BASE=docker.io/library/debian:bookworm-slim
LOCAL_BASE=localhost/coze-session-base:bookworm
PACKAGES=(podman buildah runc debootstrap fuse-overlayfs slirp4netns uidmap)

say() { echo "== $*" >&2; }
die() { echo "container.sh: $*" >&2; exit 1; }
as_root() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }

engine() {
    if [ -n "${ENGINE:-}" ]; then echo "$ENGINE"
    elif command -v podman >/dev/null; then echo podman
    elif command -v docker >/dev/null; then echo docker
    else die "neither podman nor docker: run \`scripts/container.sh host\` (Debian) or install one"; fi
}

# Ulimits a container gets: the host's hard limit on open files up to 65536, 4096 processes (the
# service runs about 40 threads). Podman's own defaults (1048576, 4194304) need CAP_SYS_RESOURCE.
ulimits() {
    local nofile nproc
    nofile=$(ulimit -Hn); [ "$nofile" = unlimited ] || [ "$nofile" -gt 65536 ] && nofile=65536
    nproc=$(ulimit -Hu); [ "$nproc" = unlimited ] || [ "$nproc" -gt 4096 ] && nproc=4096
    echo "nofile=$nofile:$nofile nproc=$nproc:$nproc"
}

podman_conf() {
    local conf=var/podman/containers.conf limits
    read -ra limits <<<"$(ulimits)"
    mkdir -p var/podman
    cat >"$conf" <<CONF
# written by scripts/container.sh for this host
[containers]
default_ulimits = ["${limits[0]}", "${limits[1]}"]
CONF
    if command -v runc >/dev/null; then printf '[engine]\nruntime = "runc"\n' >>"$conf"; fi
    export CONTAINERS_CONF="$PWD/$conf"
}

host() {
    local missing=()
    for pkg in "${PACKAGES[@]}"; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    if [ ${#missing[@]} -eq 0 ]; then say "host: ${PACKAGES[*]} already installed"; return; fi
    command -v apt-get >/dev/null || die "no apt-get: install ${missing[*]} (or docker) yourself"
    say "host: installing ${missing[*]}"
    as_root apt-get update -qq
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
}

base() {
    local eng; eng=$(engine)
    [ "$eng" = podman ] && podman_conf
    if [ -n "${BASE:-}" ]; then echo "$BASE"; return; fi
    if "$eng" image inspect "$REGISTRY_BASE" >/dev/null 2>&1 \
        || timeout 120 "$eng" pull -q "$REGISTRY_BASE" >/dev/null 2>&1; then
        echo "$REGISTRY_BASE"; return
    fi
    if "$eng" image inspect "$LOCAL_BASE" >/dev/null 2>&1; then
        say "base: no registry; reusing $LOCAL_BASE"
        echo "$LOCAL_BASE"; return
    fi
    command -v debootstrap >/dev/null || die "no registry and no debootstrap: run \`scripts/container.sh host\`"
    say "base: no registry reachable; making $LOCAL_BASE with debootstrap (about a minute)"
    root=$(mktemp -d /var/tmp/coze-base.XXXXXX)  # global: the EXIT trap runs after base() returns
    trap 'as_root rm -rf "$root"' EXIT
    as_root debootstrap --variant=minbase bookworm "$root" http://deb.debian.org/debian >/dev/null
    # what debian:bookworm-slim is: updates and security sources, no documentation, no package caches
    as_root tee "$root/etc/apt/sources.list" >/dev/null <<SOURCES
deb http://deb.debian.org/debian bookworm main
deb http://deb.debian.org/debian bookworm-updates main
deb http://deb.debian.org/debian-security bookworm-security main
SOURCES
    as_root tee "$root/etc/dpkg/dpkg.cfg.d/slim" >/dev/null <<SLIM
path-exclude /usr/share/doc/*
path-include /usr/share/doc/*/copyright
path-exclude /usr/share/man/*
path-exclude /usr/share/info/*
path-exclude /usr/share/locale/*
path-include /usr/share/locale/locale.alias
SLIM
    as_root find "$root/usr/share/doc" -mindepth 2 ! -name copyright -delete 2>/dev/null || true
    as_root rm -rf "$root"/usr/share/{man,info}/* "$root"/var/cache/apt/archives/*.deb "$root"/var/lib/apt/lists/*
    as_root find "$root/usr/share/locale" -mindepth 1 -maxdepth 1 ! -name locale.alias -exec rm -rf {} +
    as_root tar -C "$root" -c . | "$eng" import --change 'CMD ["/bin/bash"]' - "$LOCAL_BASE" >/dev/null
    echo "$LOCAL_BASE"
}

image() {
    local eng base_image ca; eng=$(engine)
    base_image=$(base)
    [ "$eng" = podman ] && podman_conf
    ca=${CA_BUNDLE:-${PIP_CERT:-${SSL_CERT_FILE:-/etc/ssl/certs/ca-certificates.crt}}}
    local args=(build -f Containerfile -t "$IMAGE" --build-arg "BASE=$base_image")
    if [ "$eng" = podman ]; then
        # OCI images carry no HEALTHCHECK; a build's RUN steps take no default_ulimits from containers.conf
        local limits; read -ra limits <<<"$(ulimits)"
        args+=(--format docker --ulimit "${limits[0]}" --ulimit "${limits[1]}")
    fi
    [ -s "$ca" ] && args+=(--secret "id=ca-certificates,src=$ca")
    say "image: $eng ${args[*]} ."
    "$eng" "${args[@]}" .
    say "image: $IMAGE, $("$eng" image inspect --format '{{.Size}}' "$IMAGE" | awk '{printf "%.0f MB", $1 / 1e6}')"
}

case "${1:-}" in
    host) host ;;
    base) base ;;
    image) image ;;
    *) die "usage: $0 host|base|image" ;;
esac
