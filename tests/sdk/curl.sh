#!/usr/bin/env bash
# Plain curl talking to keyrelay: one non-streaming and one streaming chat completion.
#
# Usage: bash curl.sh BASE_URL MODEL      (BASE_URL like http://127.0.0.1:PORT/v1)
# Exits non-zero if a call fails or an answer is empty.
set -euo pipefail
base_url=$1
model=$2
body() {
  printf '{"model":"%s","messages":[{"role":"user","content":"Say hello"}],"max_tokens":16,"stream":%s}' \
    "$model" "$1"
}
post() {
  curl -sS --fail-with-body --noproxy '*' --max-time 30 "$@" \
    -H 'content-type: application/json' -H 'authorization: Bearer anything' \
    "$base_url/chat/completions"
}

answer=$(post -d "$(body false)")
# The answer's message content must be a non-empty string.
if ! grep -Eq '"content": *"[^"]+"' <<<"$answer"; then
  echo "curl: empty non-streaming answer: $answer" >&2
  exit 1
fi

stream=$(post -N -d "$(body true)")
chunks=$(grep -Ec '^data: \{.*"delta": *\{[^}]*"content": *"[^"]+"' <<<"$stream" || true)
if [ "$chunks" -lt 2 ]; then
  echo "curl: expected several content chunks, got $chunks: $stream" >&2
  exit 1
fi
if ! grep -qx 'data: \[DONE\]' <<<"$stream"; then
  echo "curl: stream did not end with data: [DONE]: $stream" >&2
  exit 1
fi

echo "curl ok: ${#answer} bytes, $chunks chunks"
