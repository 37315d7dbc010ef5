# The campaign-grpc server as a container image: `make image` builds it (see the Makefile), or
# `docker build -t campaign-grpc .` from a clone. Kubernetes' native gRPC probes check health
# (grpc.health.v1: "" for liveness, campaign.v1.CampaignService for readiness), so the image
# has no HEALTHCHECK.
#
# BASE is any Debian-like image with python3 (3.11 or later) and its venv module: the public
# python image by default, with python3 in /usr/local/bin; `make image` builds on a Debian 12
# made by mmdebstrap, with python3 in /usr/bin. Both make the same virtualenv in /opt/venv.
ARG BASE=python:3.11-slim

FROM ${BASE} AS build
# pip's CA bundle, when the way to PyPI passes a proxy with a CA of its own: `make image` mounts
# the host's bundle for the build's steps (podman build --volume) and names it here. Nothing of
# it stays in the image.
ARG PIP_CERT
RUN python3 -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
# The dependencies of the server and the client first, in a layer of their own that a change of
# the sources alone does not rebuild; the client itself (a dependency of the server) comes from
# clients/python below, not from PyPI.
COPY pyproject.toml ./
COPY clients/python/pyproject.toml clients/python/
RUN python3 -c 'import sys, tomllib; [print(d) for f in sys.argv[1:] \
        for d in tomllib.load(open(f, "rb"))["project"]["dependencies"] \
        if not d.startswith("campaign-grpc-client")]' \
        pyproject.toml clients/python/pyproject.toml > requirements.txt \
    && pip install --no-cache-dir -r requirements.txt
COPY README.md ./
COPY protos protos
COPY src src
COPY clients/python clients/python
# The stubs, generated from protos/ into the client package as `make proto` does (without the
# type stubs for mypy) by grpcio-tools, one of the server's dependencies. .dockerignore keeps a
# checkout's generated tree out.
COPY tools/python_stubs.sh tools/
RUN sh tools/python_stubs.sh
# The client and the server together, as they are installed everywhere.
RUN pip install --no-cache-dir ./clients/python .

FROM ${BASE}
COPY --from=build /opt/venv /opt/venv
# A user of its own with a fixed uid (10001, no login), owning the data directory: a volume
# mounted there must be writable by that uid. useradd is not in every base (a minimal Debian
# lacks it), so the entries are written directly.
RUN echo 'campaign-grpc:x:10001:10001:campaign-grpc:/var/lib/campaign-grpc:/usr/sbin/nologin' \
        >> /etc/passwd \
    && echo 'campaign-grpc:x:10001:' >> /etc/group \
    && mkdir -p /var/lib/campaign-grpc \
    && chown 10001:10001 /var/lib/campaign-grpc
# Every flag of `campaign-grpc serve` can be given as an environment variable
# (CAMPAIGN_GRPC_<FLAG>); these two are the image's defaults, so that `-e` (or a ConfigMap)
# overrides them without repeating the command. Serving beyond loopback needs TLS, tokens or
# CAMPAIGN_GRPC_INSECURE=on: the server refuses otherwise and says so.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    CAMPAIGN_GRPC_LISTEN=0.0.0.0:50051 \
    CAMPAIGN_GRPC_DATABASE_URL=sqlite:////var/lib/campaign-grpc/campaigns.db
VOLUME /var/lib/campaign-grpc
WORKDIR /var/lib/campaign-grpc
USER 10001:10001
EXPOSE 50051
# SIGTERM: the server stops taking calls, gives those in flight --shutdown-grace (10 s), closes
# the database and exits 0. `docker stop` waits 10 s before SIGKILL: give it --time 30, as
# Kubernetes' terminationGracePeriodSeconds does.
STOPSIGNAL SIGTERM
CMD ["campaign-grpc", "serve"]
