"""Placeholder: the celerybeat agent arrives with its own issue."""
