#!/usr/bin/env bash
#
# Rotate one API key the way operators do it without keywheel: one CLI call
# after another. Generate a key, write it to each target, then read each
# target back and compare. bench/run times this script against keywheel.
#
#   bench/rotate-by-hand.sh TARGETS_FILE
#
# TARGETS_FILE has one target per line:
#   vault PATH        KV v2 secret PATH under the mount "secret", field api_key
#   aws SECRET_ID     Secrets Manager secret, JSON field API_KEY
#   k8s NAMESPACE     Secret bench-key in NAMESPACE, key API_KEY
#
# The servers come from the environment the dev stack exports: BAO_ADDR and
# BAO_TOKEN for `bao`, AWS_ENDPOINT_URL and the AWS_* test credentials for
# `aws`, KEYWHEEL_K8S_EMULATOR_URL for `curl`. The key never appears in
# argv: `bao` reads it from stdin, `aws` and `curl` from a 0600 file.
# Exits non-zero when a write fails or a read-back differs.

set -euo pipefail
umask 077

targets_file=$1
work=$(mktemp -d "${TMPDIR:-/tmp}/rotate-by-hand.XXXXXX")
trap 'rm -rf "$work"' EXIT

key="sk_bench_$(head -c 30 /dev/urandom | od -An -tx1 | tr -d ' \n')"
encoded=$(printf '%s' "$key" | base64 -w0)
printf '{"API_KEY": "%s"}' "$key" >"$work/aws.json"
printf '{"data": {"API_KEY": "%s"}}' "$encoded" >"$work/k8s.json"

aws_cli() {
  aws --endpoint-url "$AWS_ENDPOINT_URL" --region us-east-1 "$@"
}

k8s_url() {
  echo "$KEYWHEEL_K8S_EMULATOR_URL/api/v1/namespaces/$1/secrets/bench-key"
}

write() {
  case $1 in
    vault) printf '%s' "$key" | bao kv patch -mount=secret "$2" api_key=- >/dev/null ;;
    aws)
      aws_cli secretsmanager put-secret-value --secret-id "$2" \
        --secret-string "file://$work/aws.json" >/dev/null
      ;;
    k8s)
      curl -sf -X PATCH -H 'Content-Type: application/merge-patch+json' \
        --data-binary "@$work/k8s.json" "$(k8s_url "$2")" >/dev/null
      ;;
    *) echo "rotate-by-hand: unknown target kind $1" >&2 && return 1 ;;
  esac
}

# Reads the target's value and compares it with the key, without printing it.
check() {
  local value
  case $1 in
    vault) value=$(bao kv get -mount=secret -field=api_key "$2") ;;
    aws)
      value=$(aws_cli secretsmanager get-secret-value --secret-id "$2" \
        --query SecretString --output text)
      [[ $value == "$(cat "$work/aws.json")" ]] && value=$key
      ;;
    k8s)
      value=$(curl -sf "$(k8s_url "$2")")
      [[ $value == *"\"API_KEY\":\"$encoded\""* ]] && value=$key
      ;;
  esac
  if [[ $value != "$key" ]]; then
    echo "rotate-by-hand: $1 $2 does not hold the new key" >&2
    return 1
  fi
}

while read -r kind name; do
  write "$kind" "$name"
done <"$targets_file"

while read -r kind name; do
  check "$kind" "$name"
done <"$targets_file"
