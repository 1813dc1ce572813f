"""Operator tools: the manage.py commands for topics, status, inspection, dead letters and replay."""
