#!/usr/bin/env sh
# Non-streaming, then streaming (-N: print each SSE event as it arrives, ending with data: [DONE]).
curl -sS http://127.0.0.1:8080/v1/chat/completions \
  -H 'content-type: application/json' \
  -d '{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"Hello"}]}'
echo

curl -sSN http://127.0.0.1:8080/v1/chat/completions \
  -H 'content-type: application/json' \
  -d '{"model":"llama-3.1-8b-instant","messages":[{"role":"user","content":"Hello"}],"stream":true}'
