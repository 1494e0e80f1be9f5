#!/usr/bin/env bash
# Container entry point for Spark on Kubernetes (driver and executor pods created by the Spark Operator),
# written after the `entrypoint.sh` of Apache Spark's own images, for a pip-installed PySpark.
#   driver ARGS...    spark-submit in client mode inside the driver pod (what Spark asks for)
#   executor          the executor JVM, configured by the SPARK_EXECUTOR_* variables Spark sets
#   anything else     exec'd as is (e.g. `python -c ...` for a smoke test)
set -euo pipefail

: "${SPARK_HOME:?SPARK_HOME must point at the pyspark installation}"
if [ -z "${JAVA_HOME:-}" ]; then
  JAVA_HOME="$(dirname "$(dirname "$(readlink -f "$(command -v java)")")")"
  export JAVA_HOME
fi

SPARK_CLASSPATH="${SPARK_CLASSPATH:-}:${SPARK_HOME}/jars/*"
if [ -n "${SPARK_EXTRA_CLASSPATH:-}" ]; then SPARK_CLASSPATH="${SPARK_CLASSPATH}:${SPARK_EXTRA_CLASSPATH}"; fi
if [ -n "${HADOOP_CONF_DIR:-}" ]; then SPARK_CLASSPATH="${HADOOP_CONF_DIR}:${SPARK_CLASSPATH}"; fi
if [ -n "${SPARK_CONF_DIR:-}" ]; then SPARK_CLASSPATH="${SPARK_CONF_DIR}:${SPARK_CLASSPATH}"; fi
SPARK_CLASSPATH="${SPARK_CLASSPATH}:${PWD}"

# SPARK_JAVA_OPT_0, SPARK_JAVA_OPT_1, ... carry the executor's JVM options.
executor_java_opts=()
while IFS='=' read -r name _; do
  executor_java_opts+=("${!name}")
done < <(env | grep -E '^SPARK_JAVA_OPT_[0-9]+=' | sort -t_ -k4 -n)

case "${1:-}" in
  driver)
    shift
    exec /usr/bin/tini -s -- "${SPARK_HOME}/bin/spark-submit" \
      --conf "spark.driver.bindAddress=${SPARK_DRIVER_BIND_ADDRESS}" \
      --conf "spark.executorEnv.SPARK_DRIVER_POD_IP=${SPARK_DRIVER_BIND_ADDRESS}" \
      --deploy-mode client "$@"
    ;;
  executor)
    shift
    exec /usr/bin/tini -s -- "${JAVA_HOME}/bin/java" "${executor_java_opts[@]}" \
      -Xms"${SPARK_EXECUTOR_MEMORY}" -Xmx"${SPARK_EXECUTOR_MEMORY}" \
      -cp "${SPARK_CLASSPATH}" \
      org.apache.spark.scheduler.cluster.k8s.KubernetesExecutorBackend \
      --driver-url "${SPARK_DRIVER_URL}" \
      --executor-id "${SPARK_EXECUTOR_ID}" \
      --cores "${SPARK_EXECUTOR_CORES}" \
      --app-id "${SPARK_APPLICATION_ID}" \
      --hostname "${SPARK_EXECUTOR_POD_IP}" \
      --resourceProfileId "${SPARK_RESOURCE_PROFILE_ID}" \
      --podName "${SPARK_EXECUTOR_POD_NAME}"
    ;;
  *)
    exec /usr/bin/tini -s -- "$@"
    ;;
esac
