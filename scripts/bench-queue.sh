#!/usr/bin/env bash
# `npm run bench:queue`: classify-webhook throughput of one n8n process and of n8n in queue mode
# with one and two workers (test/queue/bench.ts). Installs what is missing, like the tests.
source "$(dirname "$0")/runtime.sh"
cd "$TL_ROOT"
ensure_deps
npm run --silent build
ensure_n8n && ensure_postgres && ensure_redis
exec node dist/test/queue/bench.js "$@"
