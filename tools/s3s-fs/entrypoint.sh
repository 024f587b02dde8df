#!/bin/sh
# Creates the buckets named in S3_BUCKETS (space- or comma-separated) as directories under /data,
# then runs s3s-fs on 0.0.0.0:8014 with the S3_ACCESS_KEY / S3_SECRET_KEY credentials.
# Extra arguments go to s3s-fs (e.g. --domain).
set -eu
: "${S3_ACCESS_KEY:?set S3_ACCESS_KEY}"
: "${S3_SECRET_KEY:?set S3_SECRET_KEY}"
for bucket in $(printf '%s' "${S3_BUCKETS:-}" | tr ',' ' '); do
  case "$bucket" in
    */*|.*|"") echo "s3s-fs-entrypoint: bad bucket name '$bucket'" >&2; exit 2 ;;
  esac
  mkdir -p "/data/$bucket"
done
exec s3s-fs --host 0.0.0.0 --port 8014 \
  --access-key "$S3_ACCESS_KEY" --secret-key "$S3_SECRET_KEY" "$@" /data
