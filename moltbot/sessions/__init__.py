"""Conversations kept by the server: history, context assembly and truncation."""
