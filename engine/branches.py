"""Branches: take another of a token's alternatives and let the model go on from there.

A generation lists, for each token, the likeliest tokens the model could
have written instead. Picking one of them at token N starts a branch: the
tokens before N are shared with the generation it came from, token N is the
alternative, and the model writes the rest with the same settings. Branches
of branches make a tree, kept for as long as the caller keeps it (the
Generate screen: one tree per generation).

Every generation of a tree uses one seed (``BranchTree`` fixes one when the
settings leave it to chance). A branch's stream draws with that seed from
the start, its first draw being the token after the alternative, so taking
the same alternative at the same token always writes the same branch. The
tree hands back a branch that has the tokens asked for (the same choice made
before, or the generation whose own token it is) rather than making another.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterator
from dataclasses import dataclass, field

from engine.errors import SettingsError
from engine.generation import GenerationResult, GenerationSettings, TokenAlternative, TokenEvent, TokenStream


@dataclass(eq=False)
class Branch:
    """One generation of a tree: the tokens it shares with its parent, then its own."""

    number: int  # 1 for the first generation, then in the order the branches were made
    parent: Branch | None
    fork: int  # index of its first own token: the alternative taken (0 for the first generation)
    taken: TokenAlternative | None  # the alternative taken at the fork (None for the first generation)
    events: list[TokenEvent] = field(default_factory=list)  # every token, the shared ones first
    result: GenerationResult | None = None  # once its stream has ended

    @property
    def token_ids(self) -> list[int]:
        """The ids of every token so far, the shared ones first."""
        return [event.token_id for event in self.events]

    def follow(self, stream: TokenStream) -> Iterator[TokenEvent]:
        """Iterate the stream that writes this branch, keeping each event, then the stream's result."""
        for event in stream:
            self.events.append(event)
            yield event
        self.result = stream.result


class BranchTree:
    """A generation and every branch taken from it, in the order they were made."""

    def __init__(self, source: str, prompt: str, settings: GenerationSettings) -> None:
        self.source = source  # the model, as recorded with each branch
        self.prompt = prompt
        if settings.seed is None:
            settings = dataclasses.replace(settings, seed=random.randrange(2**31))
        self.settings = settings
        self.branches = [Branch(1, None, 0, None)]

    @property
    def root(self) -> Branch:
        """The first generation."""
        return self.branches[0]

    def fork(self, branch: Branch, index: int, token_id: int) -> Branch:
        """The branch that takes alternative ``token_id`` at token ``index`` of ``branch``.

        A new branch's events start as the tokens before ``index``; ``stream``
        writes the rest. A branch that has those tokens already (one made by
        the same choice, or the branch whose own token it is) is handed back
        instead. SettingsError if ``index`` is not a token of the branch, or
        the token is not one of its alternatives, or is the one it has.
        """
        if not 0 <= index < len(branch.events):
            raise SettingsError(
                "position", f"token {index} is not in branch {branch.number}, which has {len(branch.events)} tokens"
            )
        event = branch.events[index]
        if token_id == event.token_id:
            raise SettingsError(
                "alternative",
                f"branch {branch.number} has {event.text or '(no text)'!r} at token {index} already; pick another",
            )
        taken = next((a for a in event.alternatives if a.token_id == token_id), None)
        if taken is None:
            raise SettingsError(
                "alternative", f"token id {token_id} is not one of the alternatives listed at token {index}"
            )
        shared = branch.token_ids[:index]
        for existing in self.branches:
            if _writes(existing, shared, token_id):
                return existing
        made = Branch(len(self.branches) + 1, branch, index, taken, list(branch.events[:index]))
        self.branches.append(made)
        return made

    def stream(self, branch: Branch, model, tokenizer) -> TokenStream:
        """The stream that writes ``branch``'s own tokens; iterate it through ``branch.follow``."""
        if branch.taken is None:
            return TokenStream(model, tokenizer, self.prompt, self.settings)
        prefix = [event.token_id for event in branch.events[: branch.fork]]
        return TokenStream(
            model, tokenizer, self.prompt, self.settings, prefix=prefix, first_token=branch.taken.token_id
        )

    def describe(self, branch: Branch) -> str:
        """Where a branch is in the tree, in a line: "branch 2/3 · from 1 at token 14 ' fox'"."""
        where = f"branch {branch.number}/{len(self.branches)}"
        if branch.parent is None or branch.taken is None:
            return f"{where} · the first generation"
        return f"{where} · from {branch.parent.number} at token {branch.fork} {branch.taken.text!r}"


def _writes(branch: Branch, shared: list[int], token_id: int) -> bool:
    """Whether ``branch`` has the tokens ``shared`` then ``token_id`` as its own (or is about to)."""
    index = len(shared)
    if branch.fork > index:  # its tokens there are its parent's: the parent is the one to find
        return False
    if branch.fork == index and branch.taken is not None:
        own = branch.taken.token_id  # known before its stream has written it
    elif index < len(branch.events):
        own = branch.events[index].token_id
    else:
        return False
    return own == token_id and branch.token_ids[:index] == shared
