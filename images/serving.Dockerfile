# syntax=docker/dockerfile:1.7
# KServe custom predictor: `python -m serving` (the InferenceService in manifests/base/serving/ passes
# --model_name, --model_dir=/mnt/models, --http_port=8080 and --state). Only what serving needs: the lock
# without the training-only and dev packages (images/exclude-*.txt), no compiler, no Java, non-root.
# Build (from the repo root):  docker build -f images/serving.Dockerfile -t attribution-serving .

FROM python:3.11.13-slim-bookworm AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
COPY images/filter_lock.py images/exclude-dev.txt images/exclude-serving.txt images/
RUN python images/filter_lock.py requirements.lock images/exclude-dev.txt images/exclude-serving.txt \
      > /tmp/requirements.image.txt \
 && pip install --no-deps -r /tmp/requirements.image.txt
COPY pyproject.toml ./
COPY attribution/ attribution/
COPY serving/ serving/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip install --no-deps . \
 && python -m compileall -q /opt/venv/lib/python3.11/site-packages/attribution /opt/venv/lib/python3.11/site-packages/serving

FROM python:3.11.13-slim-bookworm
RUN groupadd --gid 10001 attribution \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /tmp --shell /usr/sbin/nologin attribution
COPY --from=build /opt/venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/tmp
USER 10001:10001
# Fails the build if the serving entry point cannot import with the trimmed dependency set.
RUN python -m serving --help > /dev/null
EXPOSE 8080
ENTRYPOINT ["python", "-m", "serving"]
