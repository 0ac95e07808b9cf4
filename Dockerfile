# Flux-Gate in one image: the same set-up script and build as a developer's
# machine, then the whole stack (Redis, PostgreSQL, Kafka, nginx with the
# module, fluxgate-worker and its settler) under supervisord.  A thin
# wrapper over the scripts on purpose: CI runs scripts/setup.sh and `make`
# on every change, so the image's steps are tested even where no Docker
# engine runs.
#
#   docker build -t fluxgate .
#   docker run -p 8080:8080 fluxgate
FROM debian:bookworm

RUN apt-get update -qq \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
        ca-certificates make bash \
 && rm -rf /var/lib/apt/lists/*

WORKDIR /opt/fluxgate
COPY . .

# packages, Kafka from Maven Central, then the module and the worker
RUN bash scripts/setup.sh && make all && rm -rf /var/lib/apt/lists/*

# the stack keeps its data here; mount a volume to keep stock and orders
ENV FG_HTTP_PORT=8080
VOLUME /opt/fluxgate/.run
EXPOSE 8080

# foreground supervisord: stops cleanly on `docker stop` (SIGTERM)
CMD ["bash", "scripts/stack", "run", "/opt/fluxgate/.run"]
