#!/usr/bin/env bash
# Provision one VM: install nodeagent the README's way (make setup) and run `nodeagent up` under systemd.
#   provision.sh server SERVER_IP agent1,agent2
#   provision.sh agent  AGENT_IP  SERVER_IP
# On the nodeagent/debian12 box (`make vagrant-box`) the packages, kubectl, the venv and the images
# are already there, so this only copies the source and starts the units; on another Debian 12 box
# (debian/bookworm64 under VirtualBox) it installs them first.
set -euo pipefail
role=$1 ip=$2 extra=$3
src=/vagrant dst=/opt/nodeagent
t0=$(date +%s)
say() { echo "provision: $role $ip: $* (+$(( $(date +%s) - t0 ))s)"; }
# Agents join with a node kubeconfig the server writes (`nodeagent up --join NAME,...`) and serves on
# the private network (nodeagent-join.service, port 8099): a lab convenience, not for production.

export DEBIAN_FRONTEND=noninteractive
need=()
for p in make rsync python3-venv curl; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || need+=("$p")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -q && apt-get install -y -q --no-install-recommends "${need[@]}"
fi
# kubectl is not in Debian 12's archive: the local box has the host's copy; elsewhere take it from
# the Kubernetes project's apt repository
if ! command -v kubectl >/dev/null; then
  apt-get install -y -q --no-install-recommends gpg ca-certificates
  mkdir -p /etc/apt/keyrings
  curl -fsSL https://pkgs.k8s.io/core:/stable:/v1.32/deb/Release.key |
    gpg --dearmor --yes -o /etc/apt/keyrings/kubernetes-apt-keyring.gpg
  echo 'deb [signed-by=/etc/apt/keyrings/kubernetes-apt-keyring.gpg] https://pkgs.k8s.io/core:/stable:/v1.32/deb/ /' \
    >/etc/apt/sources.list.d/kubernetes.list
  apt-get update -q && apt-get install -y -q kubectl
fi
# Kubernetes' node prerequisites (upstream's "Install and configure prerequisites"): bridged pod
# traffic must pass iptables, or a pod reaching a Service backend on its own node's bridge gets the
# reply straight from the backend's IP, un-DNATed, and resets the connection. Debian's kernel has
# br_netfilter as a module that nothing loads by default.
echo br_netfilter >/etc/modules-load.d/nodeagent.conf
printf 'net.bridge.bridge-nf-call-iptables = 1\nnet.ipv4.ip_forward = 1\n' >/etc/sysctl.d/90-nodeagent.conf
modprobe br_netfilter
sysctl -q -p /etc/sysctl.d/90-nodeagent.conf
mkdir -p "$dst"
# --delete keeps what is excluded: the box's baked .venv and build/images stay
rsync -a --delete --exclude .venv --exclude build --exclude .git --exclude .vagrant "$src"/ "$dst"/
say "source synced to $dst"
make -C "$dst" setup
say "make setup done"

mkdir -p /etc/nodeagent
if [ "$role" = server ]; then
  cat >/etc/nodeagent/nodeagent.env <<ENV
NODEAGENT_ARGS=--node-ip $ip --join $extra
JOIN_ADDRESS=$ip
ENV
  install -m 0644 "$dst/vagrant/systemd/nodeagent-server.service" /etc/systemd/system/nodeagent.service
  install -m 0644 "$dst/vagrant/systemd/nodeagent-join.service" /etc/systemd/system/nodeagent-join.service
  systemctl daemon-reload
  systemctl enable --now nodeagent.service nodeagent-join.service
  mkdir -p /root/.kube && ln -sf /var/lib/nodeagent/host/admin.kubeconfig /root/.kube/config
  # ready when the apiserver answers and this host's node has registered
  for _ in $(seq 1 180); do
    kubectl get node "$(hostname -s)" >/dev/null 2>&1 && break
    sleep 5
  done
  kubectl get node "$(hostname -s)" >/dev/null || { echo "node $(hostname -s) did not register" >&2; exit 1; }
else
  # wait for the server's join kubeconfig for this host, served by nodeagent-join on the server
  name=$(hostname -s)
  for _ in $(seq 1 180); do
    if curl -fsS "http://$extra:8099/$name.kubeconfig" -o /etc/nodeagent/node.kubeconfig.tmp; then
      mv /etc/nodeagent/node.kubeconfig.tmp /etc/nodeagent/node.kubeconfig; break
    fi
    sleep 5
  done
  [ -s /etc/nodeagent/node.kubeconfig ] || { echo "no join kubeconfig from $extra" >&2; exit 1; }
  chmod 600 /etc/nodeagent/node.kubeconfig
  cat >/etc/nodeagent/nodeagent.env <<ENV
NODEAGENT_ARGS=--node-ip $ip --kubeconfig /etc/nodeagent/node.kubeconfig
ENV
  install -m 0644 "$dst/vagrant/systemd/nodeagent-agent.service" /etc/systemd/system/nodeagent.service
  systemctl daemon-reload
  systemctl enable --now nodeagent.service
  # kubectl with this node's credentials (read-only for most things; the admin one stays on the server)
  mkdir -p /root/.kube && ln -sf /etc/nodeagent/node.kubeconfig /root/.kube/config
fi
say "done"
