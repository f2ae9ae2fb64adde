"""nodeagent.runtime"""
