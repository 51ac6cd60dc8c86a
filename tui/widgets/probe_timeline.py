"""A run's probe prompts over time: pick a prompt, then walk its completion from one evaluation to the next.

At every evaluation a run completes its fixed probe prompts (engine.probes).
This widget keeps them by prompt and step; it shows one prompt's completion
at one step, large, with the words it changed since the step before
highlighted, and where that step lies (step N, M of K). The screen moves it
(``move``) and feeds it the rows a run writes as they arrive (``add_probes``);
it follows the newest step until the user steps back.
"""

from __future__ import annotations

from pathlib import Path

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical, VerticalScroll
from textual.widgets import OptionList, Static

from tui.widgets.formatting import CHANGED_STYLE, changed_words


class ProbeTimeline(Vertical):
    """One probe prompt's completions, one evaluated step at a time, the changes since the step before marked."""

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._completions: dict[str, dict[int, str]] = {}  # prompt -> step -> completion
        self._prompt: str | None = None
        self._step: int | None = None  # the step shown; None follows the newest

    def compose(self) -> ComposeResult:
        yield OptionList(id="probe-prompts", compact=True, markup=False)  # a prompt is never markup
        yield Static("", id="probe-position")
        with VerticalScroll(id="probe-scroll"):
            yield Static("", id="probe-text")

    def on_mount(self) -> None:
        self._show()

    @property
    def prompt(self) -> str | None:
        """The prompt shown."""
        return self._prompt

    @property
    def step(self) -> int | None:
        """The evaluated step shown (None while there is none)."""
        steps = self._steps()
        if not steps:
            return None
        return self._step if self._step in steps else steps[-1]

    def add_probes(self, rows: list[dict]) -> None:
        """Completions a run recorded (step, prompt, text); new prompts join the list in the order they come."""
        prompts = self.query_one("#probe-prompts", OptionList)
        for row in rows:
            if row["prompt"] not in self._completions:
                self._completions[row["prompt"]] = {}
                prompts.add_option(" ".join(row["prompt"].split()))
            self._completions[row["prompt"]][row["step"]] = row["text"]
        if self._prompt is None and self._completions:
            prompts.highlighted = 0
            self._prompt = next(iter(self._completions))
        self._show()

    def move(self, offset: int) -> None:
        """Show the completion ``offset`` evaluated steps later (negative: earlier), stopping at either end."""
        steps = self._steps()
        if not steps or self.step is None:
            return
        index = max(0, min(len(steps) - 1, steps.index(self.step) + offset))
        self._step = None if index == len(steps) - 1 else steps[index]  # at the newest: follow new ones
        self._show()

    def focus_prompts(self) -> None:
        self.query_one("#probe-prompts", OptionList).focus()

    @on(OptionList.OptionHighlighted, "#probe-prompts")
    def _choose(self, event: OptionList.OptionHighlighted) -> None:
        self._prompt = list(self._completions)[event.option_index]
        self._show()

    def _steps(self) -> list[int]:
        """The shown prompt's evaluated steps, in order."""
        return sorted(self._completions.get(self._prompt, {})) if self._prompt is not None else []

    def _show(self) -> None:
        position = self.query_one("#probe-position", Static)
        text = self.query_one("#probe-text", Static)
        step, steps = self.step, self._steps()
        if step is None or self._prompt is None:
            position.update(Text("No probe completions yet.", style="dim"))
            text.update(
                Text(
                    "A run given probe prompts (lmwb train --probe TEXT, or probes on the Train form) completes "
                    "them at every evaluation; they show here step by step.",
                    style="dim",
                )
            )
            return
        index = steps.index(step)
        completions = self._completions[self._prompt]
        previous = completions[steps[index - 1]] if index > 0 else None
        where = Text.assemble(
            (f"step {step:,}", "bold"),
            f" · {index + 1} of {len(steps)} evaluated steps · ←/→ earlier/later · ",
            (f"changed since step {steps[index - 1]:,}", CHANGED_STYLE) if index > 0 else "the first evaluation",
        )
        position.update(where)
        shown = Text()
        shown.append(self._prompt, style="dim")
        shown.append_text(changed_words(previous, completions[step]))
        text.update(shown)
