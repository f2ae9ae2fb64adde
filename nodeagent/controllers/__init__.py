"""nodeagent.controllers"""
