"""nodeagent.client"""
