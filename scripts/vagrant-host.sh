#!/usr/bin/env bash
# The host side of `make vagrant-*` (run as root):
#   vagrant-host.sh packages         install vagrant, vagrant-libvirt, QEMU, libvirt, debootstrap (idempotent)
#   vagrant-host.sh libvirtd         start virtlogd and libvirtd (niced) unless libvirt already answers
#   vagrant-host.sh domain-type      print the libvirt domain type and CPU model: "kvm host", "kvm qemu64"
#                                    where a guest really boots under KVM, else "qemu qemu64" (TCG)
#   vagrant-host.sh forget-box NAME  remove box NAME from vagrant and its image from libvirt's pool
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${NODEAGENT_VAGRANT_BUILD:-$PWD/build/vagrant}
VIRSH=(virsh -q -c qemu:///system)
# libvirtd and every QEMU it spawns run at this niceness: a TCG guest eats a whole core
NICE=${NODEAGENT_VAGRANT_NICE:-15}

HOST_PACKAGES=(vagrant vagrant-libvirt qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients
  debootstrap dnsmasq-base extlinux syslinux-common fdisk rsync)

packages() {
  local missing=() p
  for p in "${HOST_PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  echo "vagrant-host: installing ${missing[*]}"
  apt-get update -q
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

libvirtd_up() {
  if "${VIRSH[@]}" version >/dev/null 2>&1; then return 0; fi
  # No systemd as PID 1 on these machines (shared/ENVIRONMENT.md): start the daemons by hand.
  # Where systemd runs, libvirtd is normally already up (libvirt-daemon-system enables it).
  pgrep -x virtlogd >/dev/null || nice -n "$NICE" virtlogd -d
  pgrep -x libvirtd >/dev/null || nice -n "$NICE" libvirtd -d
  for _ in $(seq 1 50); do
    "${VIRSH[@]}" version >/dev/null 2>&1 && { echo "vagrant-host: libvirtd started (nice $NICE)"; return 0; }
    sleep 0.2
  done
  echo "vagrant-host: libvirtd does not answer on qemu:///system" >&2
  return 1
}

# Boot the box's own kernel and initrd for a few seconds under one accelerator and look for the
# kernel handing over to the initramfs on the serial console. /dev/kvm existing is not enough:
# on nested hosts without the CPU features QEMU asks for, a KVM guest hangs right after SeaBIOS
# and `-cpu host` fails with "failed to set MSR 0x10a" (shared/ENVIRONMENT.md).
boots_under() {  # ACCEL CPU
  local log=$OUT/probe-$1-$2.log pid i
  : >"$log"
  ( exec nice -n "$NICE" qemu-system-x86_64 -accel "$1" -cpu "$2" -m 256 -smp 1 -nodefaults -display none \
    -serial "file:$log" -no-reboot -kernel "$OUT/vmlinuz" -initrd "$OUT/initrd.img" \
    -append "console=ttyS0 panic=-1" >"$log.qemu" 2>&1 ) &
  pid=$!
  for i in $(seq 1 60); do
    if grep -q "Run /init as init process" "$log"; then kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
      echo "vagrant-host: a guest reached /init under $1 (-cpu $2) in ~$(( i / 2 ))s" >&2; return 0; fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.5
  done
  kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null
  return 1
}

domain_type() {
  local cache=$OUT/domain-type stamp t
  if [ -n "${NODEAGENT_VAGRANT_DOMAIN_TYPE:-}" ]; then echo "$NODEAGENT_VAGRANT_DOMAIN_TYPE"; return; fi
  [ -f "$OUT/vmlinuz" ] || { echo "vagrant-host: no $OUT/vmlinuz: run make vagrant-box first" >&2; exit 1; }
  stamp="$(uname -r) $(sha256sum <"$OUT/vmlinuz" | cut -c1-12)"
  if [ -s "$cache" ] && [ "$(sed -n 2p "$cache")" = "$stamp" ]; then sed -n 1p "$cache"; return; fi
  # the host's own CPU first (fastest), then a plain model: the CPU features a nested host lacks
  # are what make KVM fail here
  if [ -r /dev/kvm ] && [ -w /dev/kvm ] && boots_under kvm host; then t="kvm host"
  elif [ -r /dev/kvm ] && [ -w /dev/kvm ] && boots_under kvm qemu64; then t="kvm qemu64"
  else
    t="qemu qemu64"
    echo "vagrant-host: KVM does not boot a guest here (-cpu host: $(grep -h -m1 -i -E 'error|fail' \
      "$OUT/probe-kvm-host.log.qemu" 2>/dev/null || echo 'no /init'); -cpu qemu64: $(grep -h -m1 -i -E 'error|fail' \
      "$OUT/probe-kvm-qemu64.log.qemu" 2>/dev/null || echo "no /init within 30 s, $(wc -c <"$OUT/probe-kvm-qemu64.log") \
      bytes of kernel output on the serial console")); using QEMU's TCG" >&2
    boots_under tcg qemu64 || echo "vagrant-host: not even TCG boots the box's kernel: see $OUT/probe-tcg-qemu64.log" >&2
  fi
  printf '%s\n%s\n' "$t" "$stamp" >"$cache"
  echo "$t"
}

forget_box() {
  local name=$1 vol
  vagrant box list 2>/dev/null | grep -q "^$name " && vagrant box remove --force --all "$name" >/dev/null
  # vagrant-libvirt uploads a box's image into the pool once, named after the box and its version,
  # and reuses it while it exists: a rebuilt box must not meet its predecessor there
  if "${VIRSH[@]}" pool-info default >/dev/null 2>&1; then
    for vol in $("${VIRSH[@]}" vol-list default | awk '{print $1}' | grep "^${name//\//-VAGRANTSLASH-}_vagrant_box_image" || true); do
      "${VIRSH[@]}" vol-delete --pool default "$vol" >/dev/null
    done
  fi
}

case ${1:-} in
  packages) packages ;;
  libvirtd) libvirtd_up ;;
  domain-type) mkdir -p "$OUT"; domain_type ;;
  forget-box) libvirtd_up; forget_box "$2" ;;
  *) echo "usage: $0 packages|libvirtd|domain-type|forget-box NAME" >&2; exit 2 ;;
esac
