# asyncq: one image for the broker, the workers and the control command.
# Build stage: Debian with the -dev packages. Run stage: slim Debian with only
# the runtime libraries, as a non-root user. Both images are build arguments so
# that a registry mirror (or a locally made base image) can stand in for
# Docker Hub: docker build --build-arg BASE_IMAGE=mirror/debian:bookworm ...
ARG BASE_IMAGE=debian:bookworm
ARG RUNTIME_IMAGE=debian:bookworm-slim

FROM ${BASE_IMAGE} AS build
# libraft 0.22.1 (replicas) is in bookworm-backports; the programs link it
# statically, so the run stage needs only bookworm's libuv1 and liblz4-1.
ARG DEBIAN_MIRROR=http://deb.debian.org/debian
RUN echo "deb ${DEBIAN_MIRROR} bookworm-backports main" > /etc/apt/sources.list.d/backports.list \
 && apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      build-essential cmake pkg-config libzmq3-dev libczmq-dev libsodium-dev libisal-dev \
      libmicrohttpd-dev libjansson-dev libuv1-dev liblz4-dev \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      -t bookworm-backports libraft-dev \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY CMakeLists.txt ./
COPY cmake ./cmake
COPY common ./common
COPY broker ./broker
COPY producer ./producer
COPY consumer ./consumer
COPY cli ./cli
COPY bench ./bench
COPY packaging ./packaging
RUN cmake -S . -B build -DCMAKE_BUILD_TYPE=Release -DASYNCQ_TESTS=OFF \
 && cmake --build build -j"$(nproc)" \
 && cmake --install build --prefix /opt/asyncq --strip

FROM ${RUNTIME_IMAGE}
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends libzmq5 libczmq4 libsodium23 \
      libmicrohttpd12 libjansson4 libisal2 libuv1 liblz4-1 \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin asyncq \
 && mkdir -p /var/lib/asyncq/keys /var/lib/asyncq/data \
 && chown -R asyncq:asyncq /var/lib/asyncq
COPY --from=build /opt/asyncq/bin/ /usr/local/bin/
# Named volumes mounted here start with this owner: the keys (certificates)
# and the broker's data.
VOLUME ["/var/lib/asyncq/keys", "/var/lib/asyncq/data"]
USER asyncq
# The broker listens on every interface: PULL (puts) on 5557, ROUTER on 5558.
EXPOSE 5557 5558
# Healthy when the broker this container runs (where ASYNCQ_BIND says) answers
# a STATS request. Worker containers, which run no broker, turn this off (see
# docker-compose.yml).
HEALTHCHECK --interval=5s --timeout=5s --retries=3 \
  CMD ["asyncq-broker", "--health"]
CMD ["asyncq-broker"]
