"""Adapters: SQL storage (SQLite, PostgreSQL), settings, and transports."""
