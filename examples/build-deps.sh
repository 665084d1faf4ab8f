#!/usr/bin/env bash
# Installs what building Apiary needs besides Rust: `protoc`, the protobuf
# compiler, with which the CRI's API (edgecore's Edged talks to containerd
# through it) is compiled at build time. Uses apt-get (Debian, Ubuntu) when
# protoc is missing; elsewhere it says what to install. The Quick start and
# the test command run it; running it again does nothing.
set -euo pipefail

if command -v protoc >/dev/null 2>&1 || [ -n "${PROTOC:-}" ]; then
  exit 0
fi
if command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  echo "installing protobuf-compiler (protoc), which building Apiary needs" >&2
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq protobuf-compiler >/dev/null
  exit 0
fi
echo "building Apiary needs protoc, the protobuf compiler: install it (Debian/Ubuntu:" >&2
echo "  sudo apt-get install protobuf-compiler; macOS: brew install protobuf)" >&2
echo "or set PROTOC to its path" >&2
exit 1
