#!/bin/sh
# Loads the sample data into the lake, run by the Job lake-sample-data
# (sample-data-job.yaml): installs the pinned tools, generates the data with
# generate.py and uploads it into the bucket. Idempotent: a rerun (a retried
# pod, a re-created Job) generates the same data and overwrites it.
#
# Environment: LAKE_ENDPOINT_URL, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY,
# AWS_CONFIG_FILE, DUCKDB_VERSION, AWSCLI_VERSION (all set by the Job),
# BUCKET (lake), SCALE_FACTOR (0.01), WORK (a writable directory, /work).
set -eu

: "${LAKE_ENDPOINT_URL:?}" "${AWS_ACCESS_KEY_ID:?}" "${AWS_SECRET_ACCESS_KEY:?}"
: "${DUCKDB_VERSION:?}" "${AWSCLI_VERSION:?}"
BUCKET="${BUCKET:-lake}"
SCALE_FACTOR="${SCALE_FACTOR:-0.01}"
WORK="${WORK:-/work}"
SCRIPTS="$(cd "$(dirname "$0")" && pwd)"
VENV="$WORK/venv"
OUT="$WORK/out"
# How long to wait for the lake to accept requests (it may start after us).
LAKE_WAIT_SECONDS="${LAKE_WAIT_SECONDS:-300}"

log() { printf '%s %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# 1. Tools, pinned: DuckDB (the release ui/duckdb-view uses) with its TPC-H
#    extension from PyPI (no download from extensions.duckdb.org at run
#    time), and the AWS CLI (the version `cargo xtask lake tools` installs).
#    Kept across container restarts of the same pod (WORK is an emptyDir).
if ! "$VENV/bin/python" -c 'import duckdb, duckdb_extension_tpch' 2>/dev/null \
   || [ ! -x "$VENV/bin/aws" ]; then
  log "installing duckdb $DUCKDB_VERSION, duckdb-extension-tpch $DUCKDB_VERSION, awscli $AWSCLI_VERSION"
  rm -rf "$VENV"
  python3 -m venv "$VENV"
  "$VENV/bin/pip" install --quiet --no-cache-dir --disable-pip-version-check \
    "duckdb==$DUCKDB_VERSION" \
    "duckdb-extension-tpch==$DUCKDB_VERSION" \
    "awscli==$AWSCLI_VERSION"
fi
aws() { "$VENV/bin/aws" --endpoint-url "$LAKE_ENDPOINT_URL" "$@"; }

# 2. Generate, into a fresh directory (generate.py refuses existing ones).
log "generating TPC-H sf$SCALE_FACTOR and the sales tables"
rm -rf "$OUT"
mkdir -p "$OUT"
"$VENV/bin/python" "$SCRIPTS/generate.py" "$OUT" "$SCALE_FACTOR" > "$WORK/tables.json"

# 3. Wait until the lake answers (a condition with a deadline, checked once a
#    second: the Job is applied together with the lake's Deployment).
log "waiting for the lake at $LAKE_ENDPOINT_URL"
deadline=$(( $(date +%s) + LAKE_WAIT_SECONDS ))
until aws s3api list-buckets > /dev/null 2>&1; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    log "the lake at $LAKE_ENDPOINT_URL does not answer after ${LAKE_WAIT_SECONDS}s:"
    aws s3api list-buckets || true
    exit 1
  fi
  sleep 1
done

# 4. The bucket, unless it is there (s3s-fs answers BucketAlreadyExists to a
#    second create).
if ! aws s3api head-bucket --bucket "$BUCKET" > /dev/null 2>&1; then
  log "creating bucket $BUCKET"
  aws s3api create-bucket --bucket "$BUCKET" > /dev/null
fi

# 5. Upload, overwriting what an earlier run put there.
log "uploading to s3://$BUCKET/"
aws s3 cp --recursive --only-show-errors "$OUT/lake/" "s3://$BUCKET/"

# 6. Check every table's objects are in the bucket, and report.
tail -n 1 "$WORK/tables.json" | "$VENV/bin/python" -c '
import json, sys
for prefix, rows in sorted(json.load(sys.stdin).items()):
    print(prefix, rows)
' | while read -r prefix rows; do
  count=$(aws s3 ls --recursive "s3://$BUCKET/$prefix" | grep -c '\.parquet$' || true)
  if [ "$count" -eq 0 ]; then
    log "s3://$BUCKET/$prefix: no Parquet objects after the upload"
    exit 1
  fi
  log "s3://$BUCKET/$prefix: $rows rows in $count object(s)"
done
log "done"
