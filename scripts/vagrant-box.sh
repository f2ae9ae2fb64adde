#!/usr/bin/env bash
# `make vagrant-box`: build the Debian 12 base box for vagrant/ locally (no box can be downloaded
# here) and add it to Vagrant as nodeagent/debian12 (provider libvirt).
#
#   1. debootstrap bookworm from Debian's archive into a directory, with everything `make setup`
#      installs (scripts/setup.sh's APT_PACKAGES), the kernel, sshd, sudo and ifupdown;
#   2. in a chroot: a vagrant user with Vagrant's insecure public key (vagrant swaps in a key of its
#      own on the first `vagrant up`), passwordless sudo, eth0 on DHCP, no timers or services that
#      would eat a TCG guest's only CPU (apt-daily, man-db, the packaged containerd: nodeagent's
#      kubelet runs its own), kubectl copied from this host (it is not in Debian's archive), and the
#      project's venv and images baked in at /opt/nodeagent (`make setup` there), so provisioning
#      under software emulation only syncs the source;
#   3. a 20 GiB sparse disk, one ext4 partition, extlinux as the boot loader, converted to qcow2;
#   4. the vagrant-libvirt box format: box.img + metadata.json + Vagrantfile in a tar.
#
# Cached: the box is rebuilt only when its inputs change (this script, scripts/setup.sh,
# pyproject.toml, vagrant/box/, the kubectl binary); the key of the inputs is in the box's name.
# Every step prints its time. Run as root (debootstrap, mount, chroot).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${NODEAGENT_VAGRANT_BUILD:-$ROOT/build/vagrant}
BOX_NAME=${NODEAGENT_BOX_NAME:-nodeagent/debian12}
MIRROR=${DEBIAN_MIRROR:-http://deb.debian.org/debian}
SUITE=bookworm
DISK_GIB=20
KUBECTL=${KUBECTL:-$(command -v kubectl || true)}

say() { printf '%s vagrant-box: %s\n' "$(date +%T)" "$*"; }
step_start=0
step() { step_start=$(date +%s); say "$*"; }
step_done() { say "  done in $(( $(date +%s) - step_start ))s"; }

[ "$(id -u)" = 0 ] || { echo "vagrant-box: run as root (debootstrap, mount, chroot)" >&2; exit 1; }
[ -x "$KUBECTL" ] || { echo "vagrant-box: kubectl not found on this host; the VMs get a copy of it" >&2; exit 1; }
./scripts/vagrant-host.sh packages

# The inputs' key: a changed input gives another key, so another box.
key=$( { find scripts/vagrant-box.sh scripts/setup.sh pyproject.toml vagrant/box -type f | LC_ALL=C sort \
           | xargs sha256sum; sha256sum <"$KUBECTL"; echo "$SUITE $MIRROR $DISK_GIB"; } | sha256sum | cut -c1-12)
box_file=$OUT/nodeagent-debian12-$key.box
mkdir -p "$OUT"
if [ -f "$box_file" ] && [ "$(cat "$OUT/box.added" 2>/dev/null)" = "$key" ] \
   && vagrant box list 2>/dev/null | grep -q "^$BOX_NAME .*libvirt"; then
  say "box $BOX_NAME is up to date (inputs $key, $box_file)"
  exit 0
fi

work=$OUT/work
rootfs=$work/rootfs
mnt=$work/mnt
loopdev=""
# chroot with a clean environment (not this host's PATH, pyenv or pip variables)
in_root() {
  chroot "$rootfs" env -i PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root \
    LANG=C.UTF-8 DEBIAN_FRONTEND=noninteractive "$@"
}
cleanup() {
  set +e
  for m in "$rootfs/dev/pts" "$rootfs/dev" "$rootfs/proc" "$rootfs/sys" "$mnt"; do
    mountpoint -q "$m" && umount -l "$m"
  done
  [ -n "$loopdev" ] && losetup -d "$loopdev"
}
trap cleanup EXIT
mkdir -p "$work"
t0=$(date +%s)

if [ "$(cat "$work/rootfs.key" 2>/dev/null)" != "$key" ]; then
  rm -rf "$rootfs"
  # The packages `make setup` would install, read from setup.sh so the two lists cannot drift.
  setup_pkgs=$(sed -n '/^APT_PACKAGES=(/,/)/p' scripts/setup.sh | tr -d '()' | sed 's/APT_PACKAGES=//' | xargs)
  include="linux-image-amd64,systemd-sysv,udev,dbus,openssh-server,sudo,ifupdown,isc-dhcp-client,netbase,"
  include+="ca-certificates,rsync,less,python3,initramfs-tools,$(echo "$setup_pkgs" | tr ' ' ',')"
  # debootstrap's own result is kept as a tar, so a change of the later steps does not fetch again
  dkey=$(echo "$SUITE $MIRROR $include" | sha256sum | cut -c1-12)
  if [ "$(cat "$work/debootstrap.key" 2>/dev/null)" = "$dkey" ] && [ -f "$work/debootstrap.tar" ]; then
    step "debootstrap $SUITE: reusing $work/debootstrap.tar"
    mkdir -p "$rootfs" && tar -C "$rootfs" -xf "$work/debootstrap.tar"
  else
    step "debootstrap $SUITE from $MIRROR (minbase + $include)"
    debootstrap --variant=minbase --include="$include" "$SUITE" "$rootfs" "$MIRROR" >"$work/debootstrap.log" 2>&1 \
      || { tail -20 "$work/debootstrap.log" >&2; exit 1; }
    tar -C "$rootfs" -cf "$work/debootstrap.tar" .
    echo "$dkey" >"$work/debootstrap.key"
  fi
  step_done

  step "configure the guest (vagrant user, network, services, kubectl)"
  mount -t proc proc "$rootfs/proc"; mount -t sysfs sys "$rootfs/sys"
  mount --bind /dev "$rootfs/dev"; mount --bind /dev/pts "$rootfs/dev/pts"
  cp /etc/resolv.conf "$rootfs/etc/resolv.conf"
  install -m 0755 "$KUBECTL" "$rootfs/usr/local/bin/kubectl"
  # Vagrant's well-known insecure key, as every public box has it: vagrant replaces it at first boot
  pub=$(find /usr/share/rubygems-integration /usr/lib/ruby /opt/vagrant -path '*/vagrant-*/keys/vagrant.pub' \
          2>/dev/null | head -1 || true)
  [ -n "$pub" ] || { echo "vagrant-box: Vagrant's keys/vagrant.pub not found" >&2; exit 1; }
  cp -r vagrant/box/rootfs/. "$rootfs/"
  cp "$pub" "$rootfs/tmp/vagrant.pub"
  in_root /bin/bash -euo pipefail -s <<'CHROOT'
echo vagrant-box > /etc/hostname
useradd -m -s /bin/bash -G sudo vagrant
echo vagrant:vagrant | chpasswd
install -d -m 0700 -o vagrant -g vagrant /home/vagrant/.ssh
install -m 0600 -o vagrant -g vagrant /tmp/vagrant.pub /home/vagrant/.ssh/authorized_keys
rm /tmp/vagrant.pub
echo 'vagrant ALL=(ALL) NOPASSWD: ALL' > /etc/sudoers.d/vagrant && chmod 0440 /etc/sudoers.d/vagrant
# sshd: no DNS look-ups of the client (slow with no resolver), host keys made at first boot
rm -f /etc/ssh/ssh_host_*
systemctl enable regenerate-ssh-host-keys.service
# a TCG guest has one slow CPU: nothing may run that nodeagent does not need
systemctl disable containerd.service apt-daily.timer apt-daily-upgrade.timer man-db.timer \
  e2scrub_all.timer fstrim.timer 2>/dev/null || true
systemctl mask systemd-networkd-wait-online.service 2>/dev/null || true
ln -sf /usr/share/zoneinfo/UTC /etc/localtime
update-initramfs -u -k all >/dev/null
CHROOT
  step_done

  step "bake the project at /opt/nodeagent (make setup: venv, CRI stubs, images)"
  mkdir -p "$rootfs/opt/nodeagent"
  tar -C "$ROOT" --exclude=./.venv --exclude=./build --exclude=./.git --exclude='./vagrant/.vagrant' \
      --exclude='__pycache__' --exclude='*.egg-info' -cf - . | tar -C "$rootfs/opt/nodeagent" -xf -
  # pip reaches PyPI through this host's network, which may need this host's CA bundle (an
  # intercepting egress proxy): lent to the chroot for the build only, not left in the box
  cp /etc/ssl/certs/ca-certificates.crt "$rootfs/tmp/host-ca.crt"
  in_root PIP_CERT=/tmp/host-ca.crt PYTHON=/usr/bin/python3 /bin/bash -euo pipefail \
      -c 'cd /opt/nodeagent && ./scripts/setup.sh' >"$work/setup.log" 2>&1 \
    || { tail -30 "$work/setup.log" >&2; exit 1; }
  rm -f "$rootfs/tmp/host-ca.crt"
  in_root /bin/bash -c 'apt-get clean; rm -rf /root/.cache /var/lib/apt/lists/*'
  : >"$rootfs/etc/resolv.conf"
  for m in "$rootfs/dev/pts" "$rootfs/dev" "$rootfs/proc" "$rootfs/sys"; do umount -l "$m"; done
  echo "$key" >"$work/rootfs.key"
  step_done
fi

step "disk image: ${DISK_GIB} GiB sparse, ext4, extlinux"
raw=$work/disk.raw
rm -f "$raw"
truncate -s "${DISK_GIB}G" "$raw"
echo 'label: dos
start=2048, type=83, bootable' | sfdisk -q "$raw"
# the partition through a loop device at its offset (partition scanning, losetup -P, does not make
# /dev/loopNp1 on every kernel, and the MBR is written into the file directly below)
loopdev=$(losetup -f --show -o $((2048 * 512)) --sizelimit $(( DISK_GIB * 1024 * 1024 * 1024 - 2048 * 512 )) "$raw")
part=$loopdev
# extlinux 6.04 cannot boot from ext4 with the 64bit feature
mkfs.ext4 -q -L root -O ^64bit,^metadata_csum "$part"
uuid=$(blkid -s UUID -o value "$part")
mkdir -p "$mnt"
mount "$part" "$mnt"
cp -a "$rootfs/." "$mnt/"
echo "UUID=$uuid / ext4 errors=remount-ro 0 1" >"$mnt/etc/fstab"
mkdir -p "$mnt/boot/extlinux"
kernel=$(cd "$mnt/boot" && ls vmlinuz-* | sort -V | tail -1)
initrd=initrd.img-${kernel#vmlinuz-}
cat >"$mnt/boot/extlinux/extlinux.conf" <<CONF
DEFAULT debian
TIMEOUT 0
PROMPT 0
LABEL debian
  LINUX /boot/$kernel
  INITRD /boot/$initrd
  APPEND root=UUID=$uuid ro console=tty0 console=ttyS0,115200 net.ifnames=0 biosdevname=0
CONF
extlinux --install "$mnt/boot/extlinux" >/dev/null 2>&1
cp "$mnt/boot/$kernel" "$OUT/vmlinuz"; cp "$mnt/boot/$initrd" "$OUT/initrd.img"   # for the KVM probe
used=$(df -m --output=used "$mnt" | tail -1)
umount "$mnt"
losetup -d "$loopdev"; loopdev=""
dd if=/usr/lib/syslinux/mbr/mbr.bin of="$raw" bs=440 count=1 conv=notrunc status=none
step_done

step "qcow2 and the vagrant-libvirt box"
boxdir=$work/box
rm -rf "$boxdir"; mkdir -p "$boxdir"
qemu-img convert -O qcow2 "$raw" "$boxdir/box.img"
rm -f "$raw"
cat >"$boxdir/metadata.json" <<JSON
{"provider": "libvirt", "format": "qcow2", "virtual_size": $DISK_GIB}
JSON
cp vagrant/box/Vagrantfile "$boxdir/Vagrantfile"
rm -f "$OUT"/nodeagent-debian12-*.box
tar -C "$boxdir" -cf "$box_file.tmp" metadata.json Vagrantfile box.img
mv "$box_file.tmp" "$box_file"
rm -rf "$boxdir"
step_done

step "vagrant box add $BOX_NAME"
./scripts/vagrant-host.sh forget-box "$BOX_NAME"
vagrant box add --force --name "$BOX_NAME" --provider libvirt "$box_file" >/dev/null
echo "$key" >"$OUT/box.added"
step_done
say "box $BOX_NAME built in $(( $(date +%s) - t0 ))s: $box_file ($(du -m "$box_file" | cut -f1) MiB, ${used} MiB used in the guest's root)"
