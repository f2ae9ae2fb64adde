"""nodeagent.kubelet"""
