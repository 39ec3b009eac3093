"""Moltbot: a private, self-hosted AI assistant."""

__version__ = "0.1.0"
