"""What the product does, without HTTP: generation, tools, sessions (see docs/ARCHITECTURE.md)."""
