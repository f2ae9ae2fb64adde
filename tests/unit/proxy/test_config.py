"""`nodeagent proxy --config FILE`: the KubeProxyConfiguration parser, and upstream's precedence
(the file wins over the flags it covers; --hostname-override wins over the file)."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from nodeagent.cli import build_parser
from nodeagent.cli import main as cli_main
from nodeagent.proxy import command
from nodeagent.proxy.config import BindAddress, ConfigError, load, parse, parse_duration

HEAD = "apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeProxyConfiguration\n"

# what `kubeadm config print init-defaults --component-configs KubeProxyConfiguration` writes
# (zero values everywhere), with a few settings filled in
KUBEADM_STYLE = HEAD + """\
bindAddress: 0.0.0.0
bindAddressHardFail: false
clientConnection:
  acceptContentTypes: ""
  burst: 0
  contentType: ""
  kubeconfig: /var/lib/kube-proxy/kubeconfig.conf
  qps: 0
clusterCIDR: 10.244.0.0/16,fd00:10:244::/56
configSyncPeriod: 0s
conntrack:
  maxPerCore: null
  min: null
  tcpBeLiberal: false
  tcpCloseWaitTimeout: null
  tcpEstablishedTimeout: null
  udpStreamTimeout: 0s
  udpTimeout: 0s
detectLocal:
  bridgeInterface: ""
  interfaceNamePrefix: ""
detectLocalMode: ""
enableProfiling: false
healthzBindAddress: ""
hostnameOverride: " Node-A "
iptables:
  localhostNodePorts: null
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
ipvs:
  excludeCIDRs: null
  minSyncPeriod: 0s
  scheduler: ""
  strictARP: false
  syncPeriod: 0s
  tcpFinTimeout: 0s
  tcpTimeout: 0s
  udpTimeout: 0s
logging:
  flushFrequency: 0
  options:
    json:
      infoBufferSize: "0"
  verbosity: 0
metricsBindAddress: 0.0.0.0:10249
mode: ""
nftables:
  masqueradeAll: false
  masqueradeBit: null
  minSyncPeriod: 0s
  syncPeriod: 0s
nodePortAddresses: null
oomScoreAdj: null
portRange: ""
showHiddenMetricsForVersion: ""
winkernel:
  enableDSR: false
  forwardHealthCheckVip: false
  networkName: ""
  rootHnsEndpointName: ""
  sourceVip: ""
"""


@pytest.mark.parametrize(("text", "seconds"), [
    ("30s", 30.0), ("1m0s", 60.0), ("500ms", 0.5), ("1h2m3.5s", 3723.5), ("1.5h", 5400.0), (".5s", 0.5),
    ("0", 0.0), ("-1s", -1.0), ("+2m", 120.0), ("250us", 250e-6), ("3\u00b5s", 3e-6), ("7ns", 7e-9),
])
def test_go_durations(text: str, seconds: float) -> None:
    assert parse_duration(text) == pytest.approx(seconds)


@pytest.mark.parametrize("text", ["", "30", "1x", "s", ".s", "1m 2s", "--1s", "1.2.3s", "0s5"])
def test_bad_go_durations(text: str) -> None:
    with pytest.raises(ValueError):
        parse_duration(text)


def test_generated_config_maps_onto_our_settings_with_upstream_defaults() -> None:
    cfg = parse(KUBEADM_STYLE)
    assert cfg.mode == "iptables"  # "" is upstream's Linux default
    assert cfg.kubeconfig == "/var/lib/kube-proxy/kubeconfig.conf"
    assert cfg.hostname_override == "node-a"  # trimmed and lower-cased, as upstream
    assert cfg.cluster_cidr == "10.244.0.0/16"  # the IPv4 member of the dual-stack pair
    assert cfg.nodeport_addresses == ()
    assert cfg.metrics == BindAddress("0.0.0.0", 10249)
    assert cfg.healthz == BindAddress("0.0.0.0", 10256)  # "" = upstream's default
    # zero durations are defaulted: syncPeriod 30s, and an iptables minSyncPeriod of 0s means 1s
    assert (cfg.sync_period, cfg.min_sync_period) == (30.0, 1.0)
    # only fields set to something other than a zero value are reported as ignored
    assert cfg.ignored == ("bindAddress",)


def test_each_mode_takes_its_own_section() -> None:
    sections = """\
iptables: {syncPeriod: 10s, minSyncPeriod: 2s}
nftables: {syncPeriod: 1m0s, minSyncPeriod: 500ms}
ipvs: {syncPeriod: 45s, minSyncPeriod: 0s}
"""
    nft = parse(HEAD + "mode: nftables\n" + sections)
    assert (nft.mode, nft.sync_period, nft.min_sync_period) == ("nftables", 60.0, 0.5)
    # the other sections are ignored as upstream ignores them, and said so
    assert "iptables.syncPeriod" in nft.ignored and "ipvs.syncPeriod" in nft.ignored
    assert "nftables.syncPeriod" not in nft.ignored
    ipt = parse(HEAD + "mode: iptables\n" + sections)
    assert (ipt.sync_period, ipt.min_sync_period) == (10.0, 2.0)
    ipvs = parse(HEAD + "mode: ipvs\n" + sections)
    assert (ipvs.sync_period, ipvs.min_sync_period) == (45.0, 0.0)  # upstream leaves IPVS' 0 alone


def test_json_is_accepted() -> None:
    doc = {"apiVersion": "kubeproxy.config.k8s.io/v1alpha1", "kind": "KubeProxyConfiguration",
           "mode": "nftables", "nftables": {"syncPeriod": "5s"}, "nodePortAddresses": ["192.168.56.0/24"]}
    cfg = parse(json.dumps(doc, indent="\t"))
    assert (cfg.mode, cfg.sync_period, cfg.nodeport_addresses) == ("nftables", 5.0, ("192.168.56.0/24",))


@pytest.mark.parametrize(("value", "expected"), [
    ("127.0.0.2", BindAddress("127.0.0.2", 10249)),  # a bare IP gets the default port
    ("[::]:9100", BindAddress("::", 9100)),
    ("0.0.0.0:0", BindAddress("0.0.0.0", 0)),
])
def test_bind_addresses(value: str, expected: BindAddress) -> None:
    assert parse(HEAD + f"metricsBindAddress: '{value}'\n").metrics == expected


@pytest.mark.parametrize(("body", "names"), [
    ("apiVersion: kubeproxy.config.k8s.io/v1beta1\nkind: KubeProxyConfiguration\n", "v1beta1"),
    ("apiVersion: kubeproxy.config.k8s.io/v1alpha1\nkind: KubeletConfiguration\n", "KubeletConfiguration"),
    ("mode: iptables\n", "apiVersion/kind"),
    (HEAD + "proxyMode: nftables\n", "'proxyMode'"),
    (HEAD + "iptables:\n  syncPeriood: 5s\n", "'iptables.syncPeriood'"),
    (HEAD + "mode: kernelspace\n", "mode: 'kernelspace'"),
    (HEAD + "detectLocalMode: NodeCIDR\n", "detectLocalMode: 'NodeCIDR'"),
    (HEAD + "nodePortAddresses: [primary]\n", "'primary'"),
    (HEAD + "nodePortAddresses: [localhost]\n", "'localhost'"),
    (HEAD + "nodePortAddresses: ['fd00::/64']\n", "not IPv4"),
    (HEAD + "nodePortAddresses: 10.0.0.0/8\n", "nodePortAddresses"),
    (HEAD + "iptables: {syncPeriod: 30}\n", "iptables.syncPeriod"),
    (HEAD + "iptables: {syncPeriod: 30x}\n", "iptables.syncPeriod"),
    (HEAD + "iptables: {syncPeriod: -5s}\n", "greater than 0"),
    (HEAD + "iptables: {masqueradeAll: true}\n", "iptables.masqueradeAll"),
    (HEAD + "mode: nftables\nnftables: {masqueradeAll: true}\n", "nftables.masqueradeAll"),
    (HEAD + "clusterCIDR: 10.244.0.0/16,10.245.0.0/16\n", "more than one IPv4"),
    (HEAD + "clusterCIDR: 10.244.0.0/33\n", "clusterCIDR"),
    (HEAD + "metricsBindAddress: localhost:10249\n", "metricsBindAddress"),
    (HEAD + "healthzBindAddress: 0.0.0.0:70000\n", "healthzBindAddress"),
    (HEAD + "iptables: 5\n", "iptables: want an object"),
    ("- a\n- b\n", "got list"),
    ("{not: [valid", "not valid YAML"),
])
def test_errors_name_the_field(body: str, names: str) -> None:
    with pytest.raises(ConfigError) as e:
        parse(body, source="kp.yaml")
    assert names in str(e.value) and str(e.value).startswith("kp.yaml: ")


def test_masquerade_all_of_another_mode_is_only_ignored() -> None:
    cfg = parse(HEAD + "mode: nftables\niptables: {masqueradeAll: true}\n")
    assert cfg.ignored == ("iptables.masqueradeAll",)


def test_all_keyword_and_retired_fields() -> None:
    cfg = parse(HEAD + "nodePortAddresses: [all]\nudpIdleTimeout: 250ms\nconntrack: {max: 0}\n")
    assert cfg.nodeport_addresses == ()
    assert cfg.ignored == ("udpIdleTimeout",)  # known (older kubeadms write it), set, not implemented


def test_load_missing_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="No such file"):
        load(str(tmp_path / "absent.yaml"))


# -- precedence in the command ----------------------------------------------------------------
def _args(tmp_path: Path, text: str, *flags: str) -> tuple[object, Path]:
    path = tmp_path / "kube-proxy.yaml"
    path.write_text(text)
    return build_parser().parse_args(["proxy", "--config", str(path), *flags]), path


def test_file_wins_over_flags_but_hostname_override_wins_over_file(tmp_path: Path) -> None:
    text = HEAD + """\
clientConnection: {kubeconfig: /etc/kp.kubeconfig}
hostnameOverride: from-file
mode: nftables
nftables: {syncPeriod: 2s, minSyncPeriod: 100ms}
clusterCIDR: 10.200.0.0/16
metricsBindAddress: 0.0.0.0:9999
"""
    args, path = _args(tmp_path, text, "--mode", "iptables", "--sync-period", "7", "--kubeconfig", "/other",
                       "--cluster-cidr", "10.1.0.0/16", "--metrics-port", "1234", "--hostname-override", "Flag-Node")
    warnings = command.apply_config(args, parse(path.read_text()))  # type: ignore[arg-type]
    a = vars(args)
    assert (a["mode"], a["sync_period"], a["min_sync_period"]) == ("nftables", 2.0, 0.1)
    assert (a["kubeconfig"], a["cluster_cidr"]) == ("/etc/kp.kubeconfig", "10.200.0.0/16")
    assert (a["metrics_bind_address"], a["metrics_port"]) == ("0.0.0.0", 9999)
    assert a["node_name"] == "flag-node"  # the flag wins (trimmed, lower-cased as upstream)
    ignored = " ".join(warnings)
    for flag in ("--mode", "--sync-period", "--kubeconfig", "--cluster-cidr", "--metrics-port"):
        assert f"{flag} is ignored" in ignored
    assert "--hostname-override" not in ignored


def test_node_name_from_file_when_no_flag(tmp_path: Path) -> None:
    args, path = _args(tmp_path, HEAD + "hostnameOverride: from-file\n")
    assert command.apply_config(args, parse(path.read_text())) == []  # type: ignore[arg-type]
    assert vars(args)["node_name"] == "from-file"
    # --node-name keeps working, under upstream's name too
    assert build_parser().parse_args(["proxy", "--node-name", "n1"]).node_name == "n1"
    assert build_parser().parse_args(["proxy", "--hostname-override", "n2"]).node_name == "n2"


def test_bad_config_exits_2_naming_the_field(tmp_path: Path, caplog: pytest.LogCaptureFixture,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    cleaned: list[object] = []
    monkeypatch.setattr(command, "cleanup_all", lambda *a: cleaned.append(a) or [])  # never touch the host
    path = tmp_path / "kp.yaml"
    path.write_text(HEAD + "iptables:\n  minSyncPeriood: 1s\n")
    with caplog.at_level(logging.ERROR, logger="nodeagent.proxy"):
        assert cli_main(["proxy", "--config", str(path), "--cleanup"]) == 2
    assert "unknown field 'iptables.minSyncPeriood'" in caplog.text
    assert cleaned == []  # the file is checked before --cleanup runs, as upstream


def test_config_without_kubeconfig_exits_2(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    args, _ = _args(tmp_path, HEAD + "mode: iptables\n", "--kubeconfig", "/ignored")
    with caplog.at_level(logging.WARNING, logger="nodeagent.proxy"):
        assert asyncio.run(command.main(args)) == 2  # type: ignore[arg-type]
    assert "--kubeconfig is ignored" in caplog.text and "clientConnection.kubeconfig" in caplog.text
