"""nodeagent.dns"""
