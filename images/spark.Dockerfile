# syntax=docker/dockerfile:1.7
# Spark driver and executor image for the SparkApplication in manifests/base/spark-training/.
# Python 3.11 + Java 17 + PySpark from requirements.lock (the same Spark the tests run locally), the GCS
# connector for gs:// paths, and the package source under /app so that
# mainApplicationFile local:///app/attribution/training/spark_job.py exists.
# Build (from the repo root):  docker build -f images/spark.Dockerfile -t attribution-spark .

FROM python:3.11.13-slim-bookworm AS build
ARG GCS_CONNECTOR_VERSION=3.1.18
ARG GCS_CONNECTOR_SHA256=""
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
ENV PATH=/opt/venv/bin:$PATH
WORKDIR /src
COPY requirements.lock ./
COPY images/filter_lock.py images/fetch_jar.py images/exclude-dev.txt images/
RUN python images/filter_lock.py requirements.lock images/exclude-dev.txt > /tmp/requirements.image.txt \
 && pip install --no-deps -r /tmp/requirements.image.txt
RUN python images/fetch_jar.py \
      "https://repo1.maven.org/maven2/com/google/cloud/bigdataoss/gcs-connector/${GCS_CONNECTOR_VERSION}/gcs-connector-${GCS_CONNECTOR_VERSION}-shaded.jar" \
      "/opt/venv/lib/python3.11/site-packages/pyspark/jars/gcs-connector-${GCS_CONNECTOR_VERSION}-shaded.jar" \
      "${GCS_CONNECTOR_SHA256}"
COPY pyproject.toml ./
COPY attribution/ attribution/
COPY serving/ serving/
COPY components/ components/
COPY pipelines/ pipelines/
RUN pip install --no-deps . \
 && python -c "import attribution, pyspark; print('attribution', attribution.__version__, 'pyspark', pyspark.__version__)"

FROM python:3.11.13-slim-bookworm
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends openjdk-17-jre-headless procps tini \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 spark \
 && useradd --uid 10001 --gid 10001 --home-dir /opt/spark/work-dir --no-create-home --shell /usr/sbin/nologin spark \
 && mkdir -p /opt/spark/work-dir /opt/spark/conf /var/data/spark-local \
 && chown -R 10001:10001 /opt/spark/work-dir /var/data/spark-local
COPY --from=build /opt/venv /opt/venv
# The application source, where mainApplicationFile points (local:///app/attribution/training/spark_job.py).
COPY attribution/ /app/attribution/
COPY --chmod=0755 images/spark-entrypoint.sh /opt/entrypoint.sh
ENV PATH=/opt/venv/bin:$PATH \
    NUMBA_CACHE_DIR=/tmp/numba-cache \
    SPARK_HOME=/opt/venv/lib/python3.11/site-packages/pyspark \
    PYSPARK_PYTHON=/opt/venv/bin/python \
    PYSPARK_DRIVER_PYTHON=/opt/venv/bin/python \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HOME=/opt/spark/work-dir
WORKDIR /opt/spark/work-dir
USER 10001:10001
ENTRYPOINT ["/opt/entrypoint.sh"]
