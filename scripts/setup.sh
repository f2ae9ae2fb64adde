#!/usr/bin/env bash
# Idempotent set-up for a fresh Debian 12 machine as root: apt packages, the venv at .venv,
# generated CRI stubs and the locally built images. Re-running it does only what is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

APT_PACKAGES=(containerd runc iptables nftables conntrack tcpdump busybox-static iputils-ping
  containernetworking-plugins iproute2 dnsmasq-base ipvsadm make gcc libc6-dev kmod procps
  util-linux python3-venv curl dnsperf haproxy wrk crun)
missing=()
for p in "${APT_PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "setup: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
# kubectl is not in Debian 12's archive: it comes with this project's machine image (package
# kubectl) or from the Kubernetes apt repository (vagrant/provision.sh adds it). The demo and the
# tests drive the cluster with the real kubectl, so say clearly what is missing.
if ! command -v kubectl >/dev/null 2>&1; then
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q kubectl >/dev/null 2>&1 || true
fi
if ! command -v kubectl >/dev/null 2>&1; then
  echo "setup: kubectl not found and no apt source provides it; install kubectl 1.32" \
       "(e.g. from pkgs.k8s.io as vagrant/provision.sh does) and run again" >&2
  exit 1
fi
# crun (the `crun` runtime handler) refuses a hybrid cgroup layout whose v2 hierarchy still offers
# a controller ("cgroups in hybrid mode not supported, drop all controllers from cgroupv2"). systemd's
# hybrid layout mounts every controller as v1; where this machine left one to v2 (hugetlb on the
# project's image), give it its own v1 hierarchy as systemd would. runc works either way.
if [ "$(stat -fc %T /sys/fs/cgroup 2>/dev/null)" = tmpfs ] && [ -s /sys/fs/cgroup/unified/cgroup.controllers ] &&
   [ ! -s /sys/fs/cgroup/unified/cgroup.subtree_control ]; then
  for c in $(cat /sys/fs/cgroup/unified/cgroup.controllers); do
    mkdir -p "/sys/fs/cgroup/$c"
    mountpoint -q "/sys/fs/cgroup/$c" || mount -t cgroup -o "$c" cgroup "/sys/fs/cgroup/$c" ||
      echo "setup: could not mount the $c cgroup controller as v1; the crun runtime handler will not work" >&2
  done
fi
# The apt containerd package may start a host containerd where an init system runs; nodeagent runs
# its own managed containerd per node and leaves the host's alone.

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)
if [ ! -f "$stamp" ]; then
  .venv/bin/pip install -q --upgrade pip
  .venv/bin/pip install -q -e '.[test]'
  rm -f .venv/.installed-*; touch "$stamp"
fi

# Generated parts: CRI stubs from proto/, the static pause binary and the image layouts.
if .venv/bin/python -c "import nodeagent.runtime.command" 2>/dev/null; then
  .venv/bin/python -m nodeagent images build
fi
# The DNS server's batched UDP helper (nodeagent/dns/udpbatch.c), built now rather than at its first start.
.venv/bin/python -c "import sys; from nodeagent.dns import udpbatch; sys.exit(udpbatch.build() is None)" ||
  echo "setup: the DNS batched UDP helper did not build; nodeagent dns will use one system call per query" >&2
echo "setup: done"
