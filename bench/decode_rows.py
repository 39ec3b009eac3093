"""What one decode step costs by the number of sequences in it, on the bundled model and llama.cpp's CPU
kernels, with the repacked weight layouts on and off (exact mode runs without them).

Each row is one sequence's next token; every sequence has a 100-token history. Best of 3 rounds of
6 steps. It shows where batching pays on this CPU: below 8 rows each row costs about what a solo step
costs; from 8 rows on the tiled kernels take over.

    .venv/bin/python bench/decode_rows.py [--rows 1 2 4 7 8 10 12 16] [--threads 2]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import llama_cpp
from common import BUNDLED_CHAT_MODEL, prepare_data_dir  # first: it puts the repository on sys.path

from moltbot.engine.llama_model import LlamaModelFile
from moltbot.engine.runner import LlamaRunner, RunnerOptions

HISTORY = 100
STEPS = 6


def step_seconds(runner: LlamaRunner, tokens: list[int], rows: int) -> float:
    batch = llama_cpp.llama_batch_init(rows, 0, 1)
    memory = llama_cpp.llama_get_memory(runner.ctx)
    best = float("inf")
    try:
        for _ in range(3):
            started = time.perf_counter()
            for step in range(STEPS):
                for row in range(rows):
                    batch.token[row] = tokens[step]
                    batch.pos[row] = HISTORY + step
                    batch.n_seq_id[row] = 1
                    batch.seq_id[row][0] = row
                    batch.logits[row] = True
                batch.n_tokens = rows
                if llama_cpp.llama_decode(runner.ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
            best = min(best, (time.perf_counter() - started) / STEPS)
            for row in range(rows):
                llama_cpp.llama_memory_seq_rm(memory, row, HISTORY, -1)
    finally:
        llama_cpp.llama_batch_free(batch)
    return best


def measure(path: Path, rows: list[int], threads: int, repacked: bool) -> dict[int, float]:
    model = LlamaModelFile(BUNDLED_CHAT_MODEL, path, 1024, repacked=repacked)
    runner = LlamaRunner(model, RunnerOptions(max(rows), 1024, 512, threads))
    try:
        tokens = model.tokenize("Once upon a time " * 40)[:HISTORY]
        batch = llama_cpp.llama_batch_init(HISTORY, 0, 1)
        try:
            for sequence in range(max(rows)):  # every sequence gets the same 100-token history
                for i, token in enumerate(tokens):
                    batch.token[i], batch.pos[i], batch.n_seq_id[i] = token, i, 1
                    batch.seq_id[i][0], batch.logits[i] = sequence, i == HISTORY - 1
                batch.n_tokens = HISTORY
                if llama_cpp.llama_decode(runner.ctx, batch) != 0:
                    raise RuntimeError("llama_decode failed")
        finally:
            llama_cpp.llama_batch_free(batch)
        return {n: step_seconds(runner, tokens, n) for n in rows}
    finally:
        runner.close()
        model.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, nargs="+", default=[1, 2, 4, 7, 8, 10, 12, 16])
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="moltbot-bench-") as tmp:
        _, path, _ = prepare_data_dir(tmp, "chat")
        plain = measure(path, args.rows, args.threads, repacked=False)
        repacked = measure(path, args.rows, args.threads, repacked=True)
    print(f"\ndecode step by rows (sequences), {HISTORY}-token histories, threads {args.threads}\n")
    print("| rows | ms/step (exact: no repack) | tokens/s | per row vs 1 row | ms/step (repacked) | tokens/s |")
    print("|---|---|---|---|---|---|")
    for n in args.rows:
        a, b = plain[n], repacked[n]
        per_row = a / n / plain[args.rows[0]]
        print(f"| {n} | {a * 1000:.1f} | {n / a:.0f} | {per_row:.2f}x | {b * 1000:.1f} | {n / b:.0f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
