#!/usr/bin/env bash
# `npm start`: installs what is missing or stale (Node 24, the repo's dependencies, the pinned n8n),
# builds, then becomes start.js (exec), so the signals npm passes on reach it with no shell between.
source "$(dirname "$0")/runtime.sh"
cd "$TL_ROOT"
ensure_deps
npm run --silent build
ensure_n8n
exec node dist/scripts/start.js
