#!/usr/bin/env bash
# Installs everything Flux-Gate needs on Debian bookworm: the build libraries,
# the services (nginx, redis, postgresql, supervisor), the test and benchmark
# tools, and the Apache Kafka broker from Maven Central (pinned in
# scripts/pom.xml, jars copied into .cache/kafka/libs).
#
# Idempotent and quiet when everything is already there; make targets call it
# before anything that needs it.  Runs as root, or through sudo otherwise.
#
#   setup.sh        everything (make run, make test, make bench)
#   setup.sh deb    only what `make deb` needs: the packaging tools and the
#                   build dependencies of debian/control; no services, no
#                   Kafka (the Dockerfile's build stage runs this)
set -euo pipefail

MODE=${1:-all}
case $MODE in
    all|deb) ;;
    *) echo "usage: $0 [deb]" >&2; exit 2 ;;
esac

ROOT=$(cd "$(dirname "$0")/.." && pwd)
CACHE=${FG_CACHE:-$ROOT/.cache}
KAFKA_LIBS=$CACHE/kafka/libs

# make deb: Debian's packaging tools and debian/control's Build-Depends
DEB_PACKAGES=(
    build-essential pkg-config nginx-dev
    libhiredis-dev librdkafka-dev libpq-dev libjansson-dev
    dpkg-dev debhelper lintian help2man
)

PACKAGES=(
    # build
    "${DEB_PACKAGES[@]}"
    libpcre2-dev libpcre3-dev zlib1g-dev libssl-dev
    clang libclang-rt-14-dev
    # services
    nginx redis-server redis-tools postgresql supervisor
    # the demo shop's sign-in service (scripts/signin.py: the standard
    # library only)
    python3
    default-jre-headless maven
    # tests and benchmarks
    libtest-base-perl libjson-pp-perl libdbd-pg-perl libtime-hires-perl
    wrk kcat curl procps iproute2 netcat-openbsd gettext-base
    # promtool, for the metrics' exposition format
    prometheus
    # perf: make bench's metrics part samples where the nginx worker's time goes
    linux-perf
    # the OpenResty-style peer of the benchmark, and its chart
    libnginx-mod-http-lua lua-nginx-redis lua-cjson gnuplot-nox
    # Prometheus (server and promtool) for the metrics tests
    prometheus
    # the waiting room in a real browser (t/205): headless Chromium driven
    # over the DevTools protocol from Perl, and a font for its screenshots
    chromium libprotocol-websocket-perl fonts-dejavu-core
    # the suite's loaded run (README, testing): the machine's CPUs kept busy
    # while `make test` runs, as on a shared CI runner
    stress-ng
)

as_root() {
    if [ "$(id -u)" -eq 0 ]; then
        "$@"
    else
        sudo "$@"
    fi
}

[ "$MODE" = deb ] && PACKAGES=("${DEB_PACKAGES[@]}")

missing_packages() {
    local p
    for p in "${PACKAGES[@]}"; do
        # libtime-hires-perl is part of perl itself on bookworm
        [ "$p" = libtime-hires-perl ] && continue
        if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null \
                | grep -q 'install ok installed'; then
            echo "$p"
        fi
    done
}

install_packages() {
    local missing
    missing=$(missing_packages)
    [ -z "$missing" ] && return 0

    echo "setup: installing Debian packages:" $missing
    as_root apt-get update -qq
    # shellcheck disable=SC2086
    as_root env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -qq --no-install-recommends $missing >/dev/null

    # the packages start their own services on systemd machines; the
    # project runs its own instances on its own ports and leaves these be
}

install_kafka() {
    local stamp=$KAFKA_LIBS/.pom.sha256
    local want
    want=$(sha256sum "$ROOT/scripts/pom.xml" | cut -d' ' -f1)

    if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
        return 0
    fi

    echo "setup: fetching Apache Kafka from Maven Central (scripts/pom.xml)"
    rm -rf "$KAFKA_LIBS"
    mkdir -p "$KAFKA_LIBS"
    if ! mvn -B -q -Dstyle.color=never -f "$ROOT/scripts/pom.xml" \
            dependency:copy-dependencies -DincludeScope=runtime \
            -DoutputDirectory="$KAFKA_LIBS" > "$CACHE/kafka/mvn.log" 2>&1; then
        cat "$CACHE/kafka/mvn.log" >&2
        echo "setup: maven could not fetch Kafka (output above)" >&2
        exit 1
    fi
    echo "$want" > "$stamp"
}

install_packages
[ "$MODE" = deb ] || install_kafka
