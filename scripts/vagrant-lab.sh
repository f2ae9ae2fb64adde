#!/usr/bin/env bash
# The three-VM lab of vagrant/ under vagrant-libvirt (run as root):
#   vagrant-lab.sh up           bring up server, agent1, agent2 one at a time, print each one's time
#   vagrant-lab.sh kubeconfig   write build/vagrant/admin.kubeconfig (kubectl on this host -> server VM)
#   vagrant-lab.sh test [ARGS]  up, the e2e of tests/vagrant (pytest ARGS), then destroy (always)
#   vagrant-lab.sh destroy      vagrant destroy -f, and the lab's libvirt networks
#   vagrant-lab.sh memory       each VM's memory: the QEMU process on the host, `free` in the guest
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
OUT=${NODEAGENT_VAGRANT_BUILD:-$ROOT/build/vagrant}
NICE=${NODEAGENT_VAGRANT_NICE:-15}
MACHINES=(server agent1 agent2)
LAB_NET=nodeagent-lab
export VAGRANT_DEFAULT_PROVIDER=libvirt
mkdir -p "$OUT"

say() { printf '%s vagrant-lab: %s\n' "$(date +%T)" "$*"; }
vg() { (cd vagrant && nice -n "$NICE" vagrant "$@"); }

ssh_config() {
  vg ssh-config "${MACHINES[@]}" >"$OUT/ssh_config.tmp" 2>/dev/null && mv "$OUT/ssh_config.tmp" "$OUT/ssh_config"
}

# The lab bridge floods every frame to every port (no MAC learning, like a hub or a switch's mirror
# port): so tcpdump on any VM's eth1 sees the pod traffic between two other VMs, as the packet-trace
# walkthrough shows (docs/vagrant.md). Pods still reach only their own peers: a frame for another
# MAC is seen by tcpdump and dropped by the kernel.
lab_bridge_floods() {
  local br
  br=$(virsh -q -c qemu:///system net-info "$LAB_NET" 2>/dev/null | awk '/^Bridge:/ {print $2}')
  [ -n "$br" ] || return 0
  ip link set dev "$br" type bridge ageing_time 0
}

up() {
  ./scripts/vagrant-host.sh libvirtd
  local m t total=0
  for m in "${MACHINES[@]}"; do
    t=$(date +%s)
    say "vagrant up $m"
    vg up --no-parallel "$m"
    lab_bridge_floods
    t=$(( $(date +%s) - t )); total=$(( total + t ))
    say "vagrant up $m: ${t}s"
    echo "$m ${t}" >>"$OUT/times.log"
  done
  ssh_config
  kubeconfig
  say "all three VMs up in ${total}s; export KUBECONFIG=$OUT/admin.kubeconfig"
  memory
}

kubeconfig() {
  [ -f "$OUT/ssh_config" ] || ssh_config
  ssh -F "$OUT/ssh_config" server sudo cat /var/lib/nodeagent/host/admin.kubeconfig >"$OUT/admin.kubeconfig.tmp"
  mv "$OUT/admin.kubeconfig.tmp" "$OUT/admin.kubeconfig"
  chmod 600 "$OUT/admin.kubeconfig"
  say "wrote $OUT/admin.kubeconfig (server https://192.168.56.10:6443)"
}

memory() {
  local m pid rss
  for m in "${MACHINES[@]}"; do
    pid=$(pgrep -f "guest=nodeagent-$m," | head -1 || true)
    rss=$( [ -n "$pid" ] && ps -o rss= -p "$pid" | awk '{printf "%d", $1/1024}' || echo "-")
    printf '  %-7s qemu RSS %s MiB; in the guest: %s\n' "$m" "$rss" \
      "$(ssh -F "$OUT/ssh_config" "$m" free -m 2>/dev/null | awk '/^Mem:/ {print "used " $3 " MiB of " $2 " MiB"}')"
  done
}

destroy() {
  vg destroy -f || true
  local n
  for n in "$LAB_NET" nodeagent-mgmt; do
    if virsh -q -c qemu:///system net-info "$n" >/dev/null 2>&1; then
      virsh -q -c qemu:///system net-destroy "$n" >/dev/null 2>&1 || true
      virsh -q -c qemu:///system net-undefine "$n" >/dev/null 2>&1 || true
    fi
  done
  rm -f "$OUT/ssh_config" "$OUT/admin.kubeconfig"
}

run_test() {
  local t0 rc=0
  t0=$(date +%s)
  : >"$OUT/times.log"
  if [ "${NODEAGENT_VAGRANT_KEEP:-}" != 1 ]; then trap 'say "destroying the VMs"; destroy' EXIT; fi
  up
  local t1
  t1=$(date +%s)
  NODEAGENT_VAGRANT=1 NODEAGENT_VAGRANT_BUILD="$OUT" .venv/bin/python -m pytest -v -p no:cacheprovider \
    tests/vagrant "$@" || rc=$?
  say "e2e: $(( $(date +%s) - t1 ))s (rc $rc); total with the VMs' start: $(( $(date +%s) - t0 ))s"
  return $rc
}

case ${1:-} in
  up) up ;;
  kubeconfig) kubeconfig ;;
  test) shift; run_test "$@" ;;
  destroy) destroy ;;
  memory) memory ;;
  *) echo "usage: $0 up|kubeconfig|test|destroy|memory" >&2; exit 2 ;;
esac
