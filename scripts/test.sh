#!/usr/bin/env bash
# `npm test` (unit and end-to-end), `npm run test:unit`, `npm run test:e2e`, `npm run test:ui` (n8n's
# editor in Chromium), `npm run test:queue` (n8n in queue mode: PostgreSQL, Redis, a main and two
# workers): installs what is missing or stale, builds, then runs the chosen tests under Node 24, one
# file at a time. The PostgreSQL store's unit tests skip, saying so, where PostgreSQL cannot be installed.
source "$(dirname "$0")/runtime.sh"
cd "$TL_ROOT"
ensure_deps
npm run --silent build
case "${1:-all}" in
unit) { ensure_postgres || true; } && tests=(dist/test/*.test.js) ;;
e2e) ensure_n8n && tests=(dist/test/e2e/*.test.js) ;;
ui) ensure_n8n && ensure_chromium && tests=(dist/test/ui/*.test.js) ;;
all) ensure_n8n && { ensure_postgres || true; } && tests=(dist/test/*.test.js dist/test/e2e/*.test.js) ;;
queue) ensure_n8n && ensure_postgres && ensure_redis && tests=(dist/test/queue/*.test.js) ;;
*) echo "usage: scripts/test.sh [unit|e2e|ui|queue|all]" >&2 && exit 2 ;;
esac
exec node --test --test-concurrency=1 "${tests[@]}"
