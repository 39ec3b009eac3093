"""A third-party pipeline-step distribution, written on disk for tests: a package and its dist-info
with entry points in `moltbot.pipeline_steps` (a good step, one that takes a built-in's name, one
that is not a Step, one whose module is missing)."""

from __future__ import annotations

import textwrap
from pathlib import Path

_PACKAGE = textwrap.dedent(
    """
    from typing import Any, ClassVar
    from moltbot.pipelines import Document, Step, StepOptions

    class ShoutOptions(StepOptions):
        suffix: str = "!"

    class Shout(Step[ShoutOptions]):
        name: ClassVar[str] = "shout"
        summary: ClassVar[str] = "upper-case every segment"
        options_model = ShoutOptions

        def apply(self, doc: Document, notes: dict[str, Any]) -> Document:
            for segment in doc.segments:
                segment.text = segment.text.upper() + self.options.suffix
            notes["shouted"] = len(doc.segments)
            return doc

    class Chunk(Shout):
        name: ClassVar[str] = "chunk"

    NOT_A_STEP = 42
    """
)

_ENTRY_POINTS = """[moltbot.pipeline_steps]
shout = moltbot_test_steps:Shout
chunk = moltbot_test_steps:Chunk
number = moltbot_test_steps:NOT_A_STEP
broken = moltbot_test_steps_missing:Step
"""


def write_step_plugin(root: Path) -> Path:
    """Write the distribution under `root` (put `root` on sys.path or PYTHONPATH to install it)."""
    package = root / "moltbot_test_steps"
    package.mkdir(parents=True)
    (package / "__init__.py").write_text(_PACKAGE)
    info = root / "moltbot_test_steps-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: moltbot-test-steps\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text(_ENTRY_POINTS)
    return root
