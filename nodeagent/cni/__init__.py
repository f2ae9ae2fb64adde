"""nodeagent.cni"""
