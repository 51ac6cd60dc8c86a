"""Branching and attention on the Generate screen, driven like a user would (App.run_test + Pilot)."""

from __future__ import annotations

import torch
from textual.widgets import Input, Static, TextArea

from engine.attention import TokenAttention
from tests.test_tui_app import SIZE, shown_text, story, wait_until
from tui.app import WorkbenchApp
from tui.screens.generate import GenerateScreen
from tui.widgets.attention_map import AttentionMap, attention_rows
from tui.widgets.config_form import ConfigForm
from tui.widgets.token_stream import TokenStreamView


async def generate(pilot, model: str, settings: dict) -> GenerateScreen:
    """Open Generate, set the model, prompt and settings, generate, and wait for the end."""
    app = pilot.app
    await pilot.press("3")
    await wait_until(pilot, lambda: bool(app.screen.query("#settings")))
    screen = app.screen
    screen.query_one("#model-a", Input).value = model
    screen.query_one("#prompt", TextArea).text = "The fox and the crow"
    screen.query_one("#settings", ConfigForm).set_values(settings)
    await pilot.press("ctrl+r")
    await wait_until(pilot, lambda: not screen.generating and "tok/s" in shown_text(screen.query_one("#stats-a")))
    return screen


@story
async def test_pick_an_alternative_a_branch_goes_on_from_it_and_both_are_kept_and_logged(tiny_model_dir) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await generate(pilot, str(tiny_model_dir), {"max_new_tokens": 16, "seed": 7})
        view = screen.query_one("#tokens-a", TokenStreamView)
        first_text, first_ids = view.text, [token.token_id for token in view.tokens]

        await pilot.press("ctrl+g", "right", "right", "right")
        detail = screen.query_one("#token-detail", Static)
        assert "↑↓ pick, ⏎ branch" in shown_text(detail)
        picked = view.tokens[3].alternatives[view.picked]
        assert picked[1] != first_ids[3], "the likeliest token it did not write is picked first"
        await pilot.press("down", "up", "enter")
        branch_line = screen.query_one("#branch-a", Static)
        await wait_until(pilot, lambda: not screen.generating and "branch 2/2" in shown_text(branch_line))
        assert f"from 1 at token 3 {picked[0]!r}" in shown_text(branch_line)
        assert [token.token_id for token in view.tokens[:3]] == first_ids[:3]
        assert view.tokens[3].token_id == picked[1] and view.marked == 3 and view.cursor == 3
        second_text = view.text

        await pilot.press("left_square_bracket")
        assert "branch 1/2 · the first generation" in shown_text(branch_line)
        assert view.text == first_text and view.marked is None, "the first generation, unchanged"
        await pilot.press("right_square_bracket")
        assert "branch 2/2" in shown_text(branch_line) and view.text == second_text

        logged = app.store.generations()
        assert [row["text"] for row in logged] == [second_text, first_text], "each branch logged, newest first"
        assert logged[0]["prompt"] == "The fox and the crow" and logged[0]["token_count"] == 16


@story
async def test_branching_in_ab_mode_is_refused_with_a_line(tiny_model_dir) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await generate(pilot, str(tiny_model_dir), {"max_new_tokens": 8, "seed": 7})
        await pilot.press("ctrl+b")
        await pilot.press("ctrl+g", "right", "enter")
        said = " ".join(shown_text(screen.query_one("#token-detail", Static)).split())
        assert said == "Branching takes one model's text: turn A/B off (Ctrl+B), then pick the alternative again."
        assert not screen.generating and len(app.store.generations()) == 1


@story
async def test_the_attention_of_the_selected_token_shows_a_row_per_layer(tiny_model_dir) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await generate(pilot, str(tiny_model_dir), {"max_new_tokens": 8, "seed": 7})
        await pilot.press("ctrl+g", "right", "right", "a")
        attention = screen.query_one("#attention", AttentionMap)
        # The title comes with the weights; the rows need the widget laid out at their height too.
        await wait_until(pilot, lambda: "attention writing" in shown_text(attention) and " L2" in shown_text(attention))
        lines = shown_text(attention).splitlines()[1:]  # under its top border
        assert "2 layers × 2 heads" in lines[0]
        assert lines[1].split() == ["h1", "h2"] and lines[2].startswith(" L1") and lines[3].startswith(" L2")
        await pilot.press("a")
        assert not attention.display


def test_the_attention_map_fits_gpt2s_twelve_heads_in_100_columns_and_says_when_it_cannot():
    weights = torch.softmax(torch.randn(12, 12, 300), -1)
    attention = TokenAttention(" fox", weights, [f" t{i}" for i in range(300)])
    lines = attention_rows(attention, 98).plain.splitlines()
    assert len(lines) == 1 + 1 + 12 + 1 and max(len(line) for line in lines) <= 98
    assert lines[-1] == "older, then ' t295' ' t296' ' t297' ' t298' ' t299'", "each strip: older, then the last 5"
    assert "12 heads need 52 columns; this is 40 wide." in attention_rows(attention, 40).plain
