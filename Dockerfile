# Flux-Gate as an image: the two Debian packages on Debian's nginx.
#
#   build    Debian bookworm with Debian's packaging tools runs the same two
#            commands as a developer's machine and t/800-packages.t:
#                bash scripts/setup.sh deb && make deb
#   runtime  Debian's nginx and the two packages, nothing else (no
#            compiler, no JVM), run by an unprivileged user.  The default
#            command is nginx; compose.yaml runs the worker and the
#            settler from the same image, and Redis, Kafka and PostgreSQL
#            from their own images.
#
#   docker build -t fluxgate .
#   docker compose up -d          (see compose.yaml)
#
# No Docker engine runs where this is developed: what keeps these steps
# honest is that they are the commands the test suite runs.

FROM debian:bookworm AS build

RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates make bash \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /src

# the packaging tools and build dependencies first, in a layer of their
# own that a change to the sources does not rebuild
COPY scripts/setup.sh scripts/setup.sh
RUN bash scripts/setup.sh deb

COPY . .
RUN make deb


FROM debian:bookworm

# apt-get rather than dpkg -i (which the test uses on a machine that has
# the dependencies already): it fetches nginx and the libraries the
# packages depend on
COPY --from=build /src/build/deb/libnginx-mod-http-fluxgate_*.deb \
                  /src/build/deb/fluxgate-worker_*.deb /tmp/
RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        nginx /tmp/libnginx-mod-http-fluxgate_*.deb /tmp/fluxgate-worker_*.deb \
 && rm -rf /var/lib/apt/lists/* /tmp/*.deb /etc/nginx/sites-enabled/default \
 && useradd --system --no-create-home --home-dir /nonexistent \
        --shell /usr/sbin/nologin fluxgate

COPY docker/nginx.conf /etc/nginx/nginx.conf
COPY docker/healthcheck /usr/local/bin/fluxgate-healthcheck

# nginx needs no root on ports above 1024 with its paths in /tmp
USER fluxgate
EXPOSE 8080 8081

HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
    CMD ["/usr/local/bin/fluxgate-healthcheck", "127.0.0.1:8081"]

# nginx stops gracefully (in-flight orders finish) on SIGQUIT
STOPSIGNAL SIGQUIT
CMD ["nginx"]
