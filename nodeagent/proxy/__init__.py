"""nodeagent.proxy"""
