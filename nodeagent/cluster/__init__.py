"""nodeagent.cluster"""
