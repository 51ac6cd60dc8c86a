"""Branching: take another of a token's alternatives and let the model go on from there.

A small random GPT-2 (the fast road) writes a text; a branch takes the
second-likeliest token at some position, and its continuation is compared
with what Hugging Face's own ``generate`` writes from the same tokens.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch
from transformers import AutoTokenizer

from engine.branches import Branch, BranchTree
from engine.errors import SettingsError
from engine.generation import GenerationSettings, TokenStream, record_generation
from engine.store import RunStore
from tests.test_generation import gpt2, llama

PROMPT = "The fox and the crow"
GREEDY = GenerationSettings(temperature=0.0, max_new_tokens=20)
SAMPLED = GenerationSettings(temperature=1.0, top_k=20, max_new_tokens=20, seed=11)


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def write(tree: BranchTree, branch: Branch, model, tokenizer) -> Branch:
    """Let the model write a branch to its end."""
    for _ in branch.follow(tree.stream(branch, model, tokenizer)):
        pass
    return branch


def greedy_continuation(model, tokenizer, ids: list[int], new_tokens: int) -> list[int]:
    """What ``generate`` writes after the prompt and ``ids``: the reference for a greedy branch."""
    input_ids = torch.tensor([tokenizer(PROMPT)["input_ids"] + ids])
    output = model.generate(input_ids, max_new_tokens=new_tokens, do_sample=False, pad_token_id=tokenizer.eos_token_id)
    return output[0, input_ids.shape[1] :].tolist()


def second_likeliest(branch: Branch, index: int) -> int:
    """The alternative at ``index`` that is not the token the branch has there."""
    event = branch.events[index]
    return next(a.token_id for a in event.alternatives if a.token_id != event.token_id)


@pytest.mark.parametrize("build", [gpt2, llama], ids=["gpt2-fast-road", "llama-general-road"])
def test_an_alternative_taken_continues_from_it_and_the_tree_keeps_both_branches(tokenizer, build):
    model = build(tokenizer)
    tree = BranchTree("test-model", PROMPT, GREEDY)
    first = write(tree, tree.root, model, tokenizer)
    first_events = list(first.events)
    alternative = second_likeliest(first, 5)

    branch = write(tree, tree.fork(first, 5, alternative), model, tokenizer)

    assert tree.branches == [first, branch] and branch.parent is first and branch.fork == 5
    assert branch.token_ids[:5] == first.token_ids[:5], "the shared start is the first generation's"
    assert branch.events[:5] == first_events[:5]
    assert branch.token_ids[5] == alternative
    assert branch.token_ids[6:] == greedy_continuation(model, tokenizer, branch.token_ids[:6], 20 - 6)
    assert len(branch.token_ids) == GREEDY.max_new_tokens, "the same settings: the same number of tokens in all"
    assert branch.result.text == tokenizer.decode(branch.token_ids)
    assert branch.result.text.startswith("".join(event.text for event in first.events[:5]))
    taken = branch.events[5]
    listed = next(a for a in first.events[5].alternatives if a.token_id == alternative)
    assert taken.index == 5 and taken.probability == pytest.approx(listed.probability, rel=1e-5)
    assert [a.token_id for a in taken.alternatives] == [a.token_id for a in first.events[5].alternatives]
    assert first.events == first_events, "going back, the first generation is unchanged"
    assert tree.describe(branch) == f"branch 2/2 · from 1 at token 5 {listed.text!r}"


def test_branches_of_branches_make_a_tree_and_the_same_choice_gives_the_same_branch(tokenizer):
    model = gpt2(tokenizer)
    tree = BranchTree("test-model", PROMPT, GREEDY)
    first = write(tree, tree.root, model, tokenizer)
    second = write(tree, tree.fork(first, 3, second_likeliest(first, 3)), model, tokenizer)
    third = write(tree, tree.fork(second, 8, second_likeliest(second, 8)), model, tokenizer)

    assert [b.number for b in tree.branches] == [1, 2, 3]
    assert third.parent is second and third.token_ids[:8] == second.token_ids[:8]
    assert third.token_ids[:3] == first.token_ids[:3]
    assert tree.fork(first, 3, second.token_ids[3]) is second, "taken again: the branch that exists"
    assert tree.fork(second, 3, first.token_ids[3]) is first, "back to the first generation's own token"
    assert len(tree.branches) == 3


def test_a_sampled_branch_draws_with_the_trees_seed_after_the_alternative(tokenizer):
    model = gpt2(tokenizer)
    written = []
    for _ in range(2):
        tree = BranchTree("test-model", PROMPT, SAMPLED)
        first = write(tree, tree.root, model, tokenizer)
        branch = write(tree, tree.fork(first, 4, second_likeliest(first, 4)), model, tokenizer)
        written.append((first.token_ids, branch.token_ids))
    assert written[0] == written[1], "the same seed and the same choice write the same branch"
    first_ids, branch_ids = written[0]
    assert branch_ids[:4] == first_ids[:4] and branch_ids[4] != first_ids[4]


def test_a_tree_without_a_seed_fixes_one_for_all_its_branches():
    tree = BranchTree("m", PROMPT, dataclasses.replace(SAMPLED, seed=None))
    assert isinstance(tree.settings.seed, int)


def test_a_branch_is_recorded_like_any_generation_with_its_whole_text(tokenizer):
    model = gpt2(tokenizer)
    store = RunStore()
    tree = BranchTree("test-model", PROMPT, GREEDY)
    first = write(tree, tree.root, model, tokenizer)
    branch = write(tree, tree.fork(first, 2, second_likeliest(first, 2)), model, tokenizer)
    record_generation(store, tree.source, branch.result, tree.settings)

    [row] = store.generations()
    assert (row["prompt"], row["text"], row["token_count"]) == (PROMPT, branch.result.text, 20)
    assert branch.result.prefix_tokens == 2
    generated = len(branch.token_ids) - 2
    assert branch.result.tokens_per_second == pytest.approx(generated / branch.result.elapsed)


def test_a_fork_that_cannot_be_taken_is_refused_in_one_line(tokenizer):
    model = gpt2(tokenizer)
    tree = BranchTree("test-model", PROMPT, GREEDY)
    first = write(tree, tree.root, model, tokenizer)
    listed = {a.token_id for a in first.events[0].alternatives}
    unlisted = next(i for i in range(len(tokenizer)) if i not in listed)
    refusals = [
        (20, second_likeliest(first, 0), "position", "token 20 is not in branch 1, which has 20 tokens"),
        (0, first.token_ids[0], "alternative", "already"),
        (0, unlisted, "alternative", "not one of the alternatives listed at token 0"),
    ]
    for index, token_id, field, words in refusals:
        with pytest.raises(SettingsError) as error:
            tree.fork(first, index, token_id)
        assert error.value.field == field and words in str(error.value) and "\n" not in str(error.value)
    assert tree.branches == [first]


def test_a_stream_with_no_room_after_its_prefix_is_refused(tokenizer):
    with pytest.raises(SettingsError, match="max_new_tokens is 3"):
        TokenStream(gpt2(tokenizer), tokenizer, PROMPT, dataclasses.replace(GREEDY, max_new_tokens=3), prefix=[5, 6, 7])
