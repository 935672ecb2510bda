#!/usr/bin/env bash
# Install the real Ethereum dev node (hardhat, from the npm registry) that the
# contract tests start on loopback. Idempotent; needs Node.js 18+ and npm.
set -euo pipefail
cd "$(dirname "$0")"
if [ -x node_modules/.bin/hardhat ] && [ node_modules/.package-lock.json -nt package-lock.json ]; then
  echo "devnode: hardhat already installed"
  exit 0
fi
npm ci --no-audit --no-fund --loglevel=error
echo "devnode: installed hardhat $(node -p 'require("hardhat/package.json").version')"
