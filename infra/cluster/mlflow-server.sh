#!/usr/bin/env bash
# MLflow tracking + registry server on PostgreSQL with an object-store artifact root.
# Run in the MLflow pod (image: the project's, which pins mlflow); psycopg2-binary and boto3
# must be installed there. Clients only need MLFLOW_TRACKING_URI=http://<host>:5000.
set -euo pipefail
exec mlflow server \
  --backend-store-uri "postgresql://${MLFLOW_PG_USER}:${MLFLOW_PG_PASSWORD}@${MLFLOW_PG_HOST}:5432/${MLFLOW_PG_DB}" \
  --artifacts-destination "${MLFLOW_ARTIFACTS_DESTINATION:-s3://reelfm-prod/mlartifacts}" \
  --serve-artifacts --host 0.0.0.0 --port 5000
