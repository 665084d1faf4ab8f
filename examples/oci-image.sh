#!/usr/bin/env bash
# Builds an OCI image archive from Debian's static busybox, with no network
# and no registry: the way to load an image onto an edge machine that cannot
# pull one. The end-to-end tests build their images with it too.
#
#   examples/oci-image.sh --name NAME[:TAG] --out FILE [--busybox PATH] [-- CMD...]
#
#   examples/oci-image.sh --name apiary.local/busybox:1 --out busybox.tar \
#     && ctr -n k8s.io images import busybox.tar
#
# CMD is the image's default command (`sh` unless given). A pause image for
# containerd's CRI sandboxes (its `sandbox_image`) is one that never exits:
#
#   examples/oci-image.sh --name apiary.local/pause:1 --out pause.tar -- sleep 2147483647
#
# The root file system holds /bin/busybox, a symlink in /bin for each of its
# applets (/bin/sh among them), /etc/passwd and /etc/group with root and
# nobody (so `id` and `whoami` work), and empty /dev, /proc, /sys, /tmp and
# /root. The same inputs give the same archive, byte for byte, so its digest
# can be checked on the edge machine. Needs bash, coreutils, tar and
# sha256sum; the layer is gzipped when gzip is there.
set -euo pipefail
export LC_ALL=C

# Prints the comment above.
usage() {
  local line
  while IFS= read -r line; do
    [[ $line == '#!'* ]] && continue
    [[ $line == '#'* ]] || break
    line=${line#'#'}
    printf '%s\n' "${line# }" >&2
  done <"$0"
  exit 2
}

name="" out="" busybox=/bin/busybox
[ -x "$busybox" ] || busybox=/usr/bin/busybox
cmd=(sh)
while [ $# -gt 0 ]; do
  case $1 in
    --name) name=${2:?--name needs a value}; shift 2 ;;
    --out) out=${2:?--out needs a value}; shift 2 ;;
    --busybox) busybox=${2:?--busybox needs a value}; shift 2 ;;
    --) shift; [ $# -gt 0 ] && cmd=("$@"); break ;;
    -h|--help) usage ;;
    *) echo "oci-image.sh: unknown argument $1" >&2; usage ;;
  esac
done
[ -n "$name" ] && [ -n "$out" ] || usage
# Without a tag the CRI would look for NAME:latest and not find NAME.
[[ ${name##*/} == *:* ]] || name="$name:latest"

[ -x "$busybox" ] || { echo "oci-image.sh: no busybox at $busybox (apt-get install busybox-static)" >&2; exit 1; }
# A dynamically linked busybox would find no libc in the image.
if [[ $(head -c 4096 "$busybox" | tr '\0' '\n') == *"/ld-"* ]]; then
  echo "oci-image.sh: $busybox is dynamically linked; use busybox-static's" >&2
  exit 1
fi

case $(uname -m) in
  x86_64) arch=amd64 ;;
  aarch64|arm64) arch=arm64 ;;
  armv7l|armv6l) arch=arm ;;
  i?86) arch=386 ;;
  ppc64le) arch=ppc64le ;;
  s390x) arch=s390x ;;
  riscv64) arch=riscv64 ;;
  *) echo "oci-image.sh: unknown machine $(uname -m)" >&2; exit 1 ;;
esac

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT

# A JSON string: quotes and backslashes escaped, control characters as \u.
json() {
  local s=$1 out="" c i
  for ((i = 0; i < ${#s}; i++)); do
    c=${s:i:1}
    case $c in
      '"') out+='\"' ;;
      '\') out+='\\' ;;
      [[:cntrl:]]) printf -v c '\\u%04x' "'$c"; out+=$c ;;
      *) out+=$c ;;
    esac
  done
  printf '"%s"' "$out"
}

# Moves FILE into the blob store; prints its digest and size.
blob() {
  local digest
  digest=$(sha256sum "$1")
  digest=${digest%% *}
  mv "$1" "$work/oci/blobs/sha256/$digest"
  printf 'sha256:%s %s' "$digest" "$(stat -c %s "$work/oci/blobs/sha256/$digest")"
}

make_rootfs() {
  local root=$1 applet
  mkdir -p "$root"/{bin,dev,etc,proc,root,sys,tmp}
  chmod 0755 "$root" "$root"/{bin,dev,etc,proc,sys}
  chmod 0700 "$root/root"
  chmod 1777 "$root/tmp"
  cp "$busybox" "$root/bin/busybox"
  chmod 0755 "$root/bin/busybox"
  for applet in $("$busybox" --list); do
    [ "$applet" = busybox ] || ln -s busybox "$root/bin/$applet"
  done
  printf 'root:x:0:0:root:/root:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n' >"$root/etc/passwd"
  printf 'root:x:0:\nnogroup:x:65534:\n' >"$root/etc/group"
  chmod 0644 "$root/etc/passwd" "$root/etc/group"
}

# Same bytes for the same files: no times, owners or directory order.
det_tar() {
  tar --sort=name --mtime=@0 --owner=0 --group=0 --numeric-owner --format=gnu "$@"
}

mkdir -p "$work/oci/blobs/sha256"
make_rootfs "$work/rootfs"
det_tar -C "$work/rootfs" -cf "$work/layer.tar" bin dev etc proc root sys tmp
diff_id=$(sha256sum "$work/layer.tar")
diff_id=sha256:${diff_id%% *}
if command -v gzip >/dev/null 2>&1; then
  gzip -n "$work/layer.tar"
  stored=$(blob "$work/layer.tar.gz")
  read -r layer_digest layer_size <<<"$stored"
  layer_type=application/vnd.oci.image.layer.v1.tar+gzip
else
  stored=$(blob "$work/layer.tar")
  read -r layer_digest layer_size <<<"$stored"
  layer_type=application/vnd.oci.image.layer.v1.tar
fi

cmd_json="" sep=""
for arg in "${cmd[@]}"; do
  cmd_json+="$sep$(json "$arg")"
  sep=,
done
printf '%s' "{\"architecture\":\"$arch\",\"os\":\"linux\",\
\"config\":{\"Env\":[\"PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin\"],\
\"Cmd\":[$cmd_json],\"WorkingDir\":\"/\"},\
\"rootfs\":{\"type\":\"layers\",\"diff_ids\":[\"$diff_id\"]},\
\"history\":[{\"created_by\":\"examples/oci-image.sh\"}]}" >"$work/config.json"
stored=$(blob "$work/config.json")
read -r config_digest config_size <<<"$stored"

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
\"config\":{\"mediaType\":\"application/vnd.oci.image.config.v1+json\",\"digest\":\"$config_digest\",\"size\":$config_size},\
\"layers\":[{\"mediaType\":\"$layer_type\",\"digest\":\"$layer_digest\",\"size\":$layer_size}]}" >"$work/manifest.json"
stored=$(blob "$work/manifest.json")
read -r manifest_digest manifest_size <<<"$stored"

printf '%s' "{\"schemaVersion\":2,\"mediaType\":\"application/vnd.oci.image.index.v1+json\",\
\"manifests\":[{\"mediaType\":\"application/vnd.oci.image.manifest.v1+json\",\
\"digest\":\"$manifest_digest\",\"size\":$manifest_size,\
\"platform\":{\"architecture\":\"$arch\",\"os\":\"linux\"},\
\"annotations\":{\"io.containerd.image.name\":$(json "$name"),\
\"org.opencontainers.image.ref.name\":$(json "${name##*:}")}}]}" >"$work/oci/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$work/oci/oci-layout"

det_tar -C "$work/oci" -cf "$work/image.tar" oci-layout index.json blobs
mv "$work/image.tar" "$out"
echo "$name $manifest_digest $out"
