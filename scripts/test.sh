#!/usr/bin/env bash
# Runs exim-pilot's whole test suite: formatting, lints, and every test of
# every crate. Services that tests need are started by scripts under
# scripts/ from here, so this one command is all a newcomer or CI runs.
set -euo pipefail
cd "$(dirname "$0")/.."

# Fleet mode's tests start their own Kafka-protocol broker and ClickHouse
# server; the tools are installed once into a cache outside the checkout.
echo "== services: install what fleet tests need"
scripts/services.sh install

echo "== cargo fmt --check"
cargo fmt --all -- --check

echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings

echo "== cargo test"
cargo test --workspace --locked "$@"
