#!/usr/bin/env bash
# MLflow tracking + registry server on PostgreSQL with an object-store artifact root, proxied
# (clients upload and download through the server and need no store credentials).
# Run in the MLflow pod (image: the project's, which pins mlflow and psycopg2-binary; boto3 must
# be installed there for an S3 destination). `postgresql+psycopg2://` names the driver: MLflow 3
# reads a bare `postgresql://` as psycopg 3, which the project does not install.
# Clients only need MLFLOW_TRACKING_URI=http://<host>:5000.
# tests/integration/test_cluster_configuration.py runs this script against a local PostgreSQL.
set -euo pipefail
exec mlflow server \
  --backend-store-uri "postgresql+psycopg2://${MLFLOW_PG_USER}:${MLFLOW_PG_PASSWORD}@${MLFLOW_PG_HOST}:${MLFLOW_PG_PORT:-5432}/${MLFLOW_PG_DB}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-s3://reelfm-prod/mlartifacts}" \
  --serve-artifacts --host "${MLFLOW_HOST:-0.0.0.0}" --port "${MLFLOW_PORT:-5000}" \
  --workers "${MLFLOW_WORKERS:-4}"
