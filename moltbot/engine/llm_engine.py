"""The engine loop: one thread owns the llama.cpp context; each step is schedule, run, postprocess."""

from __future__ import annotations

import logging
import queue
import secrets
import threading
import time

import llama_cpp
import numpy as np

from moltbot.engine.errors import EngineBusyError, EngineError
from moltbot.engine.kv_cache import HostKVCache
from moltbot.engine.kv_disk import DiskKVCache
from moltbot.engine.llama_model import LlamaModelFile
from moltbot.engine.logprobs import token_logprob
from moltbot.engine.runner import LlamaRunner
from moltbot.engine.sampler import Sampler, SamplerConfig
from moltbot.engine.scheduler import MIN_REUSE, Plan, Scheduler, Work
from moltbot.engine.sequence import Sequence, SequenceStatus
from moltbot.engine.stats import EngineStats
from moltbot.engine.tool_window import WindowChange
from moltbot.engine.types import Chunk, FinishReason, SamplingParams

log = logging.getLogger(__name__)

END = object()  # the last item a sequence emits
_IDLE_WAIT_S = 0.5


def _sampler_config(params: SamplingParams) -> SamplerConfig:
    grammar = params.tool_grammar if params.tool_active else params.grammar
    return SamplerConfig(
        temperature=params.temperature,
        top_p=params.top_p,
        top_k=params.top_k,
        min_p=params.min_p,
        seed=params.seed if params.seed is not None else secrets.randbits(31),
        presence_penalty=params.presence_penalty,
        frequency_penalty=params.frequency_penalty,
        repeat_penalty=params.repeat_penalty,
        grammar=grammar,
        logit_bias=params.logit_bias,
    )


def _rebased(work: Work) -> Work:
    """Work planned before a sequence's start moved (a restored or refused cache): start where it is."""
    seq = work.seq
    if work.start == seq.n_cached:
        return work
    count = min(work.count, seq.n_pending)
    return Work(seq, seq.n_cached, count, count == seq.n_pending)


class LLMEngine:
    """Continuous batching over the slots of one context."""

    def __init__(
        self,
        model: LlamaModelFile,
        runner: LlamaRunner,
        scheduler: Scheduler,
        context_per_slot: int,
        queue_timeout_s: float,
        *,
        host_cache: HostKVCache | None = None,
        disk_cache: DiskKVCache | None = None,
    ) -> None:
        self._model = model
        self._host = host_cache
        self._disk = disk_cache
        self._runner = runner
        self._scheduler = scheduler
        self._context_per_slot = context_per_slot
        self._queue_timeout_s = queue_timeout_s
        self._inbox: queue.SimpleQueue[Sequence | None] = queue.SimpleQueue()
        self._stop = threading.Event()
        self.stats = EngineStats()
        self._thread = threading.Thread(target=self._loop, name=f"engine-{model.info.id}", daemon=True)
        self._thread.start()

    def submit(self, seq: Sequence) -> None:
        self._inbox.put(seq)

    def close(self, timeout_s: float = 10.0) -> None:
        self._stop.set()
        self._inbox.put(None)
        self._thread.join(timeout=timeout_s)

    # -- the loop ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._drain_inbox(block=not self._scheduler.has_work)
            if self._scheduler.has_work:
                try:
                    self.step()
                except Exception:  # one bad step must not kill the engine
                    log.exception("engine step failed")
        for seq in [*self._scheduler.running, *self._scheduler.waiting]:
            self._fail(seq, EngineError("the server is shutting down"))
        self._persist()

    def _persist(self) -> None:
        """At shutdown: the slots' and the host tier's states go to the disk tier, for after a restart."""
        disk = self._disk
        if disk is None:
            return
        try:
            for slot in self._scheduler.slots:
                if len(slot.tokens) >= MIN_REUSE:
                    disk.put(tuple(slot.tokens), self._runner.save(slot.index))
            for state in self._host.states() if self._host is not None else []:
                disk.put(state.tokens, state.data)
        except Exception:  # shutting down: a cache that is not saved is only recomputed later
            log.exception("saving KV states to disk failed")
        self.stats.disk_cache_bytes = disk.bytes
        self.stats.disk_cache_entries = len(disk)

    def _drain_inbox(self, block: bool) -> None:
        try:
            item = self._inbox.get(timeout=_IDLE_WAIT_S) if block else self._inbox.get_nowait()
            while True:
                if item is not None:
                    self._scheduler.add(item)
                item = self._inbox.get_nowait()
        except queue.Empty:
            pass

    def step(self) -> None:
        """Schedule, run one batch, and deliver each sequence's new token."""
        self._expire(time.monotonic())
        plan = self._scheduler.schedule()
        for seq in plan.admitted:
            self._start(seq)
        plan.work = [_rebased(w) for w in plan.work if w.seq.status is SequenceStatus.RUNNING]
        if not plan.work:
            return
        for group in self._groups(plan.work):
            rows = self._run(group)
            for item in group:
                item.seq.n_cached += item.count
            now = time.monotonic()
            for seq, row in rows.items():
                self._sample(seq, row, now)
        self._update_stats(plan)

    def _groups(self, work: list[Work]) -> list[list[Work]]:
        """One llama_decode for the whole step; in exact mode one per prompt piece and one for all the
        decoding sequences, so llama.cpp never cuts a piece into smaller ubatches beside other sequences."""
        if not self._scheduler.exact:
            return [work]
        decoding = [w for w in work if w.start >= len(w.seq.prompt.tokens)]
        return [*([w] for w in work if w.start < len(w.seq.prompt.tokens)), *([decoding] if decoding else [])]

    def _run(self, work: list[Work]) -> dict[Sequence, int]:
        try:
            return self._runner.decode(work)
        except EngineError as exc:
            for item in work:
                self._fail(item.seq, exc)  # finishing records the slot's tokens as cached...
                self._scheduler.forget(item.seq.slot)  # ...which a failed step makes untrustworthy
            return {}

    def _expire(self, now: float) -> None:
        for seq in list(self._scheduler.running):
            if seq.cancel.is_set():
                self._finish(seq, FinishReason.CANCELLED)
            elif now > seq.deadline:
                self._finish(seq, FinishReason.TIMEOUT)
        for seq in list(self._scheduler.waiting):
            if seq.cancel.is_set():
                self._finish(seq, FinishReason.CANCELLED)
            elif now - seq.enqueued > self._queue_timeout_s:
                self._fail(seq, EngineBusyError("request waited too long for the model; retry later", 2))

    def _start(self, seq: Sequence) -> None:
        if self._host is not None:
            self._swap_with_host(seq)
        parent = seq.after
        if parent is not None and parent.status is SequenceStatus.RUNNING and parent.prompt_ready:
            self._copy_prompt(parent, seq)
        if not self._runner.truncate(seq.slot, seq.n_cached):
            self._runner.clear(seq.slot)
            seq.n_cached = seq.reused = 0
        stats = self.stats
        stats.reused_tokens_total += seq.reused
        stats.prompt_tokens_total += len(seq.prompt.tokens)
        if seq.reused > 0:
            stats.cache_hits_total += 1
        else:
            stats.cache_misses_total += 1
        try:
            seq.sampler = Sampler(self._model.vocab, self._model.n_vocab, _sampler_config(seq.params))
            if seq.params.tool_grammar is not None and not seq.params.tool_active:
                Sampler.check_grammar(self._model.vocab, seq.params.tool_grammar)
        except EngineError as exc:
            self._fail(seq, exc)

    def _copy_prompt(self, parent: Sequence, seq: Sequence) -> None:
        """n > 1: take the parent's computed prompt instead of computing it again."""
        keep = self._scheduler.reuse_limit(seq)  # the end of the prompt is evaluated again, for this one's logits
        if keep > seq.reused and self._runner.restore(seq.slot, self._runner.save(parent.slot)):
            seq.n_cached = seq.reused = keep

    def _swap_with_host(self, seq: Sequence) -> None:
        """Save what the slot held if it is about to be lost; restore a longer cached prefix if any."""
        host = self._host
        assert host is not None  # noqa: S101 - only called with a host cache
        if len(seq.evicted) - seq.reused >= MIN_REUSE and host.put(seq.evicted, self._runner.save(seq.slot)):
            self.stats.host_cache_saves_total += 1
        limit = self._scheduler.reuse_limit(seq)
        state, shared = host.best(seq.prompt.tokens, limit)
        disk = self._disk
        on_disk, disk_shared = disk.best(seq.prompt.tokens, limit) if disk is not None else (None, 0)
        if disk is not None and on_disk is not None and disk_shared > shared and disk_shared >= seq.reused + MIN_REUSE:
            data = disk.load(on_disk)
            if data is not None and self._runner.restore(seq.slot, data):
                seq.n_cached = seq.reused = disk_shared
                self.stats.disk_cache_restores_total += 1
            elif data is not None:
                disk.forget(on_disk)  # llama.cpp refused it (another build's format): recompute
        elif state is not None and shared >= seq.reused + MIN_REUSE and self._runner.restore(seq.slot, state.data):
            host.take(state)
            seq.n_cached = seq.reused = shared
            self.stats.host_cache_restores_total += 1
        self.stats.host_cache_bytes = host.bytes
        self.stats.host_cache_entries = len(host)
        if disk is not None:
            self.stats.disk_cache_bytes = disk.bytes
            self.stats.disk_cache_entries = len(disk)

    def _sample(self, seq: Sequence, row: int, now: float) -> None:
        if seq.status is not SequenceStatus.RUNNING:
            return
        try:
            token = seq.sampler.sample(self._runner.ctx, row)
        except Exception:
            log.exception("sampling failed for one sequence")
            self._fail(seq, EngineError("sampling failed"))
            return
        self._time_token(seq, now)
        if seq.params.logprobs is not None:
            self._record_logprob(seq, row, token)
        if self._model.is_end_of_generation(token):
            self._finish(seq, FinishReason.STOP)
            return
        seq.generated.append(token)
        self.stats.generated_tokens_total += 1
        decoded = seq.decoder.decode(self._model.piece(token))
        if seq.tools is not None:
            self._follow_tool_call(seq, decoded)
        text = seq.matcher.feed(decoded)
        if seq.strip_leading_space and text:
            text, seq.strip_leading_space = text.lstrip(" "), False
        if text:
            seq.emit(Chunk(text, logprobs=tuple(seq.logprobs)))
            seq.logprobs.clear()
        if seq.matcher.stopped:
            self._finish(seq, FinishReason.STOP)
        elif len(seq.generated) >= seq.params.max_tokens or seq.length >= self._context_per_slot:
            self._finish(seq, FinishReason.LENGTH)

    def _record_logprob(self, seq: Sequence, row: int, token: int) -> None:
        """The chosen token's log-probability and the top alternatives, from the row's raw logits."""
        if self._model.is_end_of_generation(token):
            return  # the end is not part of the answer (OpenAI reports no entry for it)
        pointer = llama_cpp.llama_get_logits_ith(self._runner.ctx, row)
        logits = np.ctypeslib.as_array(pointer, shape=(self._model.n_vocab,))
        seq.logprobs.append(token_logprob(logits, token, seq.params.logprobs or 0, self._model.piece))

    @staticmethod
    def _follow_tool_call(seq: Sequence, text: str) -> None:
        """A tool call opened (constrain its JSON by the tools' grammar) or closed (free again)."""
        assert seq.tools is not None  # noqa: S101 - only called for sequences with tools
        change = seq.tools.feed(text)
        if change is WindowChange.OPENED:
            seq.sampler.set_grammar(seq.params.tool_grammar)
        elif change is WindowChange.CLOSED:
            seq.sampler.set_grammar(seq.params.grammar)

    def _time_token(self, seq: Sequence, now: float) -> None:
        if seq.last_token_at == 0.0:
            self.stats.ttft_seconds.observe(now - seq.enqueued)
        else:
            self.stats.inter_token_seconds.observe(now - seq.last_token_at)
        seq.last_token_at = now

    # -- endings -------------------------------------------------------------------------------

    def _finish(self, seq: Sequence, reason: FinishReason) -> None:
        if seq.status is SequenceStatus.FINISHED:
            return
        tail = ""
        if not seq.matcher.stopped and reason is not FinishReason.TIMEOUT:
            tail = seq.matcher.feed(seq.decoder.decode(b"", final=True)) + seq.matcher.flush()
            if seq.strip_leading_space:
                tail = tail.lstrip(" ")
        matched = seq.matcher.matched
        stop = matched if matched in seq.params.stop else ""  # a template's own stops are not the client's
        counts = (len(seq.prompt.tokens), len(seq.generated), seq.reused)
        seq.emit(Chunk(tail, reason, *counts, tuple(seq.logprobs), stop))
        seq.logprobs.clear()
        self._close(seq)
        if reason is FinishReason.CANCELLED:
            self.stats.cancelled_total += 1

    def _fail(self, seq: Sequence, error: Exception) -> None:
        seq.emit(error)
        self._close(seq)

    def _close(self, seq: Sequence) -> None:
        if seq.status is SequenceStatus.FINISHED:
            return
        slot = self._scheduler.finish(seq)
        if slot is not None and self._scheduler.exact:
            self._runner.truncate(slot.index, len(slot.tokens))  # what a later request may not reuse goes
        if seq.sampler is not None:
            seq.sampler.close()
            seq.sampler = None
        seq.emit(END)
        self.stats.finished_total += 1
        self.stats.running = len(self._scheduler.running)
        self.stats.waiting = len(self._scheduler.waiting)

    def _update_stats(self, plan: Plan) -> None:
        stats = self.stats
        stats.steps_total += 1
        stats.last_batch_tokens = plan.n_tokens
        stats.running = len(self._scheduler.running)
        stats.waiting = len(self._scheduler.waiting)
