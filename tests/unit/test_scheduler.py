"""The scheduler as pure policy, with no model: admission, slots, prefix reuse, token budgets."""

from __future__ import annotations

import threading

import pytest

from moltbot.engine.scheduler import EXACT_MIN_PIECE, Scheduler, common_prefix
from moltbot.engine.sequence import Sequence, SequenceStatus
from moltbot.engine.types import Prompt, SamplingParams


def seq(tokens: list[int], max_tokens: int = 8) -> Sequence:
    return Sequence(
        Prompt(tuple(tokens)), SamplingParams(max_tokens=max_tokens), lambda _: None, threading.Event(), 0, 1e9
    )


def run_step(scheduler: Scheduler, sampled: int = 7) -> list[tuple[int, int, int, bool]]:
    """What a fake runner does: mark tokens computed, and append a token where it sampled."""
    plan = scheduler.schedule()
    out = [(w.seq.id, w.start, w.count, w.sample) for w in plan.work]
    for w in plan.work:
        w.seq.n_cached += w.count
        if w.sample:
            w.seq.generated.append(sampled)
    return out


def test_common_prefix() -> None:
    assert common_prefix([1, 2, 3], (1, 2, 4)) == 2
    assert common_prefix([], (1,)) == 0
    assert common_prefix([1, 2], (1, 2, 3)) == 2


def test_prefill_then_decode() -> None:
    scheduler = Scheduler(n_slots=2, token_budget=16)
    a = seq([1, 2, 3, 4])
    scheduler.add(a)
    assert run_step(scheduler) == [(a.id, 0, 4, True)]
    assert a.status is SequenceStatus.RUNNING
    assert run_step(scheduler) == [(a.id, 4, 1, True)]


def test_chunked_prefill_under_the_budget() -> None:
    scheduler = Scheduler(n_slots=2, token_budget=4)
    a = seq(list(range(1, 11)))
    scheduler.add(a)
    assert run_step(scheduler) == [(a.id, 0, 4, False)]
    assert run_step(scheduler) == [(a.id, 4, 4, False)]
    assert run_step(scheduler) == [(a.id, 8, 2, True)]


def test_decodes_go_first_and_new_requests_join_between_steps() -> None:
    scheduler = Scheduler(n_slots=3, token_budget=5)
    a = seq([1, 2])
    scheduler.add(a)
    run_step(scheduler)
    b = seq([5, 6, 7, 8, 9, 10])
    scheduler.add(b)
    step = run_step(scheduler)
    assert step[0] == (a.id, 2, 1, True)  # a keeps decoding while b starts
    assert step[1] == (b.id, 0, 4, False)  # b gets what is left of the budget


def test_waits_when_every_slot_is_busy() -> None:
    scheduler = Scheduler(n_slots=1, token_budget=8)
    a, b = seq([1, 2]), seq([3, 4])
    scheduler.add(a)
    scheduler.add(b)
    run_step(scheduler)
    assert b.status is SequenceStatus.WAITING
    scheduler.finish(a)
    assert run_step(scheduler) == [(b.id, 0, 2, True)]


HISTORY = list(range(1, 11))  # ten tokens: past MIN_REUSE


def test_a_returning_conversation_reuses_its_slot() -> None:
    scheduler = Scheduler(n_slots=2, token_budget=64)
    turn1 = seq(HISTORY)
    other = seq([90, 91, 92])
    for s in (turn1, other):
        scheduler.add(s)
    run_step(scheduler)
    for s in (turn1, other):
        scheduler.finish(s)
    # Turn 2 resends turn 1's prompt and the answer (7), then new tokens.
    turn2 = seq([*HISTORY, 7, 20, 21])
    scheduler.add(turn2)
    plan = scheduler.schedule()
    assert turn2.slot == turn1.slot
    assert turn2.reused == len(HISTORY)  # the sampled 7 was never evaluated, so it is not cached
    assert [(w.start, w.count) for w in plan.work] == [(len(HISTORY), 3)]


def test_a_short_shared_prefix_prefers_an_empty_slot() -> None:
    scheduler = Scheduler(n_slots=2, token_budget=64)
    first = seq([1, 2, 3])
    scheduler.add(first)
    run_step(scheduler)
    scheduler.finish(first)
    second = seq([1, 2, 50, 51])  # shares only two tokens (a BOS, say)
    scheduler.add(second)
    scheduler.schedule()
    assert second.slot != first.slot and second.reused == 0


def test_always_evaluates_one_prompt_token() -> None:
    scheduler = Scheduler(n_slots=1, token_budget=16)
    first = seq(HISTORY)
    scheduler.add(first)
    run_step(scheduler)
    run_step(scheduler)
    scheduler.finish(first)
    again = seq(HISTORY)
    scheduler.add(again)
    plan = scheduler.schedule()
    assert again.reused == len(HISTORY) - 1
    assert [(w.start, w.count, w.sample) for w in plan.work] == [(len(HISTORY) - 1, 1, True)]


def test_least_recently_used_free_slot_without_a_prefix() -> None:
    scheduler = Scheduler(n_slots=2, token_budget=8)
    a, b = seq([1]), seq([2])
    scheduler.add(a)
    scheduler.add(b)
    run_step(scheduler)
    scheduler.finish(a)
    scheduler.finish(b)
    c = seq([3, 3])
    scheduler.add(c)
    scheduler.schedule()
    assert c.slot == a.slot


def test_finishing_a_waiting_sequence() -> None:
    scheduler = Scheduler(n_slots=1, token_budget=4)
    a = seq([1])
    scheduler.add(a)
    scheduler.finish(a)
    assert not scheduler.has_work and a.status is SequenceStatus.FINISHED


def test_rejects_a_budget_below_one_token_per_slot() -> None:
    with pytest.raises(ValueError, match="budget"):
        Scheduler(n_slots=4, token_budget=2)


def test_a_shared_preamble_does_not_take_another_conversations_slot() -> None:
    scheduler = Scheduler(n_slots=2, token_budget=64)
    preamble = list(range(1, 11))
    first = seq([*preamble, 40, 41, 42, 43, 44, 45, 46, 47, 48, 49, 50])
    scheduler.add(first)
    run_step(scheduler)
    scheduler.finish(first)
    other = seq([*preamble, 60, 61])  # shares 10 of the 21 cached tokens: under half
    scheduler.add(other)
    scheduler.schedule()
    assert other.slot != first.slot and other.reused == 0


# -- exact mode ----------------------------------------------------------------------------------


def test_exact_pieces_are_never_shorter_than_the_minimum() -> None:
    """A 40-token prompt under a 20-token budget beside three decodes (17 left a step): no piece under
    8 tokens, none that leaves fewer than 8 behind."""
    scheduler = Scheduler(n_slots=4, token_budget=20, exact=True)
    decoders = [seq([100 + i, 1, 2], max_tokens=50) for i in range(3)]
    for d in decoders:
        scheduler.add(d)
    run_step(scheduler)  # their prompts
    long = seq(list(range(1, 41)))
    scheduler.add(long)
    pieces = []
    for _ in range(10):
        pieces += [count for seq_id, _, count, _ in run_step(scheduler) if seq_id == long.id]
        if long.prompt_ready:
            break
    assert sum(pieces) == 40 and all(count >= EXACT_MIN_PIECE for count in pieces), pieces
    assert pieces == [17, 15, 8]  # 17 would have left 6: the second piece stops at 15


def test_exact_piece_sizes() -> None:
    scheduler = Scheduler(n_slots=1, token_budget=17, exact=True)
    assert scheduler._piece(pending=5, budget=16) == 5  # a whole short prompt
    assert scheduler._piece(pending=20, budget=16) == 12  # leaves 8, not 4
    assert scheduler._piece(pending=14, budget=13) == 14  # a 1-token rest goes along
    assert scheduler._piece(pending=20, budget=5) == 0  # too small a piece: wait for a step with room
    assert scheduler._piece(pending=9, budget=4) == 9  # over the step budget by less than a piece
    fast = Scheduler(n_slots=1, token_budget=16)
    assert fast._piece(pending=20, budget=5) == 5


def test_exact_reuse_leaves_a_whole_piece_and_keeps_only_the_prompt() -> None:
    scheduler = Scheduler(n_slots=1, token_budget=32, exact=True)
    first = seq(list(range(1, 21)), max_tokens=4)
    scheduler.add(first)
    for _ in range(10):  # the prompt, then four tokens
        run_step(scheduler)
        if len(first.generated) >= 4:
            scheduler.finish(first)
            break
    assert first.status is SequenceStatus.FINISHED
    # The slot keeps the prompt, not the four tokens generated one at a time.
    assert scheduler.slots[0].tokens == list(range(1, 21))
    again = seq([*range(1, 21), 7, 7, 7])  # the same prompt, the answer and three more tokens
    scheduler.add(again)
    assert run_step(scheduler) == [(again.id, 15, 8, True)]  # 15 reused, a whole piece evaluated
    assert again.reused == 15
    short = Scheduler(n_slots=1, token_budget=32, exact=True)
    tiny = seq([1, 2, 3])
    assert short.reuse_limit(tiny) == 0


def test_exact_mode_needs_room_for_two_pieces() -> None:
    with pytest.raises(ValueError, match="exact mode"):
        Scheduler(n_slots=4, token_budget=19, exact=True)
