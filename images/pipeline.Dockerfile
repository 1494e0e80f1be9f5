# syntax=docker/dockerfile:1.7
# Kubeflow Pipelines task image: every component runs `attribution.*` code from this image.
# Java 17 is here because the local-Spark feature engine and xgboost.spark trainer can run in a task.
# Build (from the repo root):  docker build -f images/pipeline.Dockerfile -t attribution-pipeline .

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
COPY images/filter_lock.py images/exclude-dev.txt images/
RUN python images/filter_lock.py requirements.lock images/exclude-dev.txt > /tmp/requirements.image.txt \
 && pip install --no-deps -r /tmp/requirements.image.txt
COPY pyproject.toml ./
COPY attribution/ attribution/
COPY serving/ serving/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip install --no-deps . \
 && python -c "import attribution, components, pipelines; print('attribution', attribution.__version__)"

FROM python:3.11.13-slim-bookworm
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 attribution \
 && useradd --uid 10001 --gid 10001 --home-dir /home/attribution --create-home --shell /usr/sbin/nologin attribution
COPY --from=build /opt/venv /opt/venv
# The Spark training and deploy steps render their resources from these templates (attribution.platform.spark_submit).
COPY manifests/base /app/manifests/base
COPY sql /app/sql
ENV PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    ATTRIBUTION_MANIFESTS=/app/manifests \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    SPARK_LOCAL_IP=127.0.0.1 \
    HOME=/home/attribution
WORKDIR /home/attribution
USER 10001:10001
CMD ["python"]
