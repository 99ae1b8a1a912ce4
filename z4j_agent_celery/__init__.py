"""Placeholder: the celery agent arrives with its own issue."""
