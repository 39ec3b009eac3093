"""Model file formats (GGUF, HuggingFace safetensors directories): recognised and checked without loading
anything, so that the model store and the engine share one reading of them and neither imports the other."""

from __future__ import annotations

from moltbot.errors import MoltbotError


class MalformedModelError(MoltbotError):
    """A model file or directory is not what its format requires (truncated, out-of-bounds, unparsable)."""
