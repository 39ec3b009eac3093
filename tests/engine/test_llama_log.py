"""llama.cpp's log while a model and its context are made: no line the process logs meanwhile is lost."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

from tests.helpers import bundled_gguf

_SCRIPT = textwrap.dedent(
    """
    import logging, sys, threading
    from pathlib import Path
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    from moltbot.engine.llama_model import LlamaModelFile
    from moltbot.engine.runner import LlamaRunner, RunnerOptions

    loaded = threading.Event()
    def chatter():
        count = 0
        while not loaded.is_set() or count < 50:
            logging.getLogger("probe").info("line %d", count)
            count += 1
        logging.getLogger("probe").info("total %d", count)
    thread = threading.Thread(target=chatter)
    thread.start()
    for _ in range(3):
        model = LlamaModelFile("probe", Path(sys.argv[1]), 256)
        runner = LlamaRunner(model, RunnerOptions(1, 256, 64, 1))
        runner.close()
        model.close()
    loaded.set()
    thread.join()
    """
)


def test_lines_logged_while_a_model_loads_all_reach_stderr(bundled_cache: Path) -> None:
    path = bundled_gguf(bundled_cache)
    done = subprocess.run(
        [sys.executable, "-c", _SCRIPT, str(path)], capture_output=True, text=True, timeout=300, check=False
    )
    assert done.returncode == 0, done.stderr[-2000:]
    lines = done.stderr.splitlines()
    total = next(int(line.split()[-1]) for line in lines if line.startswith("probe total "))
    seen = {line for line in lines if line.startswith("probe line ")}
    assert len(seen) == total, f"{total - len(seen)} of {total} lines lost"
    # llama.cpp's own chatter is DEBUG, below this logger's level: none of it reaches stderr.
    assert not [line for line in lines if line.startswith(("llama_", "load_tensors", "print_info"))]
