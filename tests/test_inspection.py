"""Scoring a text and the logit lens, checked against plain transformers on small models built here.

Every number the engine reports is computed again the obvious way (one
forward pass of the model, log-softmax, counting, the final norm and the LM
head over ``hidden_states``) and compared. Then the command line (text and
JSON, every bad input in one line) and the Inspect screen, driven like a user.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import pytest
import torch
from textual.widgets import Input, Label, Static, TextArea
from transformers import (
    AutoTokenizer,
    GPT2Config,
    GPT2LMHeadModel,
    GPTNeoXConfig,
    GPTNeoXForCausalLM,
    LlamaConfig,
    LlamaForCausalLM,
)

from engine.checks import read_text_file
from engine.errors import SettingsError
from engine.inspection import (
    LensReadout,
    TextScore,
    Window,
    logit_lens,
    reading_windows,
    score_text,
    text_tokens,
)
from tests.conftest import assert_one_line_error, build_tiny_gpt2, lmwb_in_process
from tests.test_tui_app import SIZE, shown_text, story, wait_until
from tui.app import WorkbenchApp
from tui.screens.inspect import InspectScreen
from tui.widgets.scored_text import ScoredTextView, difference_colour, surprise_colour

TEXT = "The fox and the crow met by the old mill, and the fox spoke first. Café 🦊!"


@pytest.fixture(scope="module")
def tokenizer(tiny_model_dir: Path):
    return AutoTokenizer.from_pretrained(tiny_model_dir)


def gpt2(tokenizer, *, n_positions: int = 64, seed: int = 0, n_layer: int = 3) -> GPT2LMHeadModel:
    """A small random GPT-2 (wide initialisation, so its predictions differ from token to token)."""
    torch.manual_seed(seed)
    eos = tokenizer.eos_token_id
    config = GPT2Config(
        vocab_size=len(tokenizer),
        n_positions=n_positions,
        n_embd=32,
        n_layer=n_layer,
        n_head=2,
        initializer_range=0.3,
        bos_token_id=eos,
        eos_token_id=eos,
    )
    return GPT2LMHeadModel(config).eval()


def reference_logits(model, tokenizer, text: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The start token and the text's ids, and the model's logits over them: the plain transformers way."""
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    sequence = torch.tensor([[tokenizer.eos_token_id, *ids]])
    with torch.no_grad():
        return sequence, model(sequence).logits[0]


# ---------------------------------------------------------------------------
# Scoring


def test_the_summed_logprob_is_the_models_own_loss_times_the_tokens(tokenizer) -> None:
    model = gpt2(tokenizer)
    score = score_text(model, tokenizer, TEXT)
    sequence, _ = reference_logits(model, tokenizer, TEXT)
    with torch.no_grad():
        loss = model(sequence, labels=sequence).loss.item()
    tokens = sequence.shape[1] - 1
    assert len(score.tokens) == tokens
    assert score.total_logprob == pytest.approx(-loss * tokens, abs=1e-4)
    assert score.loss == pytest.approx(loss, abs=1e-5)
    assert score.bits_per_byte == pytest.approx(loss * tokens / math.log(2) / len(TEXT.encode("utf-8")), rel=1e-6)
    assert score.windows == 1


def test_every_tokens_logprob_rank_and_entropy_match_a_direct_computation(tokenizer) -> None:
    model = gpt2(tokenizer)
    score = score_text(model, tokenizer, TEXT)
    sequence, logits = reference_logits(model, tokenizer, TEXT)
    for index, token in enumerate(score.tokens):
        predicted = logits[index]  # the logits at the token before it (the start token for the first)
        target = sequence[0, index + 1].item()
        assert token.id == target
        assert token.logprob == pytest.approx(torch.log_softmax(predicted, -1)[target].item(), abs=1e-5)
        assert token.rank == 1 + int((predicted > predicted[target]).sum())
        entropy_bits = torch.distributions.Categorical(logits=predicted).entropy().item() / math.log(2)
        assert token.entropy == pytest.approx(entropy_bits, abs=1e-4)
        assert token.surprise == pytest.approx(-token.logprob / math.log(2))
    assert len({token.rank for token in score.tokens}) > 5  # ranks that vary, so the comparison means something


def test_the_pieces_join_to_the_text_where_a_token_splits_a_character(tokenizer) -> None:
    text = "日本語 and 🦊🐦, naïve façade"
    ids, pieces = text_tokens(tokenizer, text)
    assert ids == tokenizer(text, add_special_tokens=False)["input_ids"]
    assert "".join(pieces) == text
    assert "" in pieces  # a character spread over two tokens is shown once, with the token that completes it


def test_a_text_longer_than_the_context_is_scored_in_sliding_windows_each_token_once(tokenizer) -> None:
    model = gpt2(tokenizer, n_positions=16)
    ids = tokenizer(TEXT * 2, add_special_tokens=False)["input_ids"][:40]
    text = tokenizer.decode(ids)
    assert tokenizer(text, add_special_tokens=False)["input_ids"] == ids
    # 41 positions (the start token first) in windows of 16, each starting 8 after the one before; the last
    # ends at the end. Each window scores what the one before did not.
    assert reading_windows(41, 16) == [
        Window(0, 1, 16),
        Window(8, 16, 24),
        Window(16, 24, 32),
        Window(24, 32, 40),
        Window(25, 40, 41),
    ]
    score = score_text(model, tokenizer, text)
    assert score.windows == 5 and len(score.tokens) == 40
    sequence = [tokenizer.eos_token_id, *ids]
    starts = [0] * 15 + [8] * 8 + [16] * 8 + [24] * 8 + [25]  # the window each token is scored in, by hand
    for index, token in enumerate(score.tokens):
        position = index + 1
        context = torch.tensor([sequence[starts[index] : position]])
        assert position - starts[index] >= 8 or starts[index] == 0  # half a context before it, at least
        with torch.no_grad():
            expected = torch.log_softmax(model(context).logits[0, -1], -1)[sequence[position]].item()
        assert token.logprob == pytest.approx(expected, abs=1e-5), index


def test_a_second_model_scores_the_same_tokens_for_an_a_b_comparison(tokenizer) -> None:
    model_a, model_b = gpt2(tokenizer, seed=0), gpt2(tokenizer, seed=1)
    score = score_text(model_a, tokenizer, TEXT, against=(model_b, tokenizer))
    alone = score_text(model_b, tokenizer, TEXT)
    assert score.against is not None
    assert [t.logprob for t in score.against.tokens] == pytest.approx([t.logprob for t in alone.tokens], abs=1e-6)
    assert [t.id for t in score.against.tokens] == [t.id for t in score.tokens]
    row = score.as_dict()["tokens"][3]
    assert row["against_logprob"] == pytest.approx(alone.tokens[3].logprob)
    assert set(row) == {"id", "text", "logprob", "rank", "entropy", "against_logprob"}


def test_models_that_tokenize_differently_are_refused(tokenizer, tmp_path: Path) -> None:
    other_tokenizer = AutoTokenizer.from_pretrained(build_tiny_gpt2(tmp_path / "other", vocab_size=280))
    with pytest.raises(SettingsError, match="these models tokenize differently; compare models that share a tokenizer"):
        score_text(gpt2(tokenizer), tokenizer, TEXT, against=(gpt2(other_tokenizer), other_tokenizer))


def test_an_empty_text_is_refused(tokenizer) -> None:
    with pytest.raises(SettingsError, match="text: is empty"):
        score_text(gpt2(tokenizer), tokenizer, "")
    with pytest.raises(SettingsError, match="text: is empty"):
        logit_lens(gpt2(tokenizer), tokenizer, "")


def test_scoring_leaves_a_model_in_training_mode_in_it_without_dropout_on_the_scores(tokenizer) -> None:
    model = gpt2(tokenizer)
    expected = score_text(model, tokenizer, TEXT)
    model.train()  # its dropout (0.1, GPT2Config's default) would change every score
    assert score_text(model, tokenizer, TEXT).tokens == expected.tokens
    assert model.training


# ---------------------------------------------------------------------------
# The logit lens


def test_the_last_layer_of_the_lens_is_the_models_own_output(tokenizer) -> None:
    model = gpt2(tokenizer)
    _, logits = reference_logits(model, tokenizer, TEXT)
    position = 5
    readout = logit_lens(model, tokenizer, TEXT, position, top=10)
    last = readout.layers[-1]
    probabilities = torch.softmax(logits[position], -1)  # logits at the token before token 5: its prediction
    best = probabilities.topk(10)
    assert [t.token_id for t in last.top] == best.indices.tolist()
    assert [t.probability for t in last.top] == pytest.approx(best.values.tolist(), abs=1e-6)
    entropy = torch.distributions.Categorical(probs=probabilities).entropy().item() / math.log(2)
    assert last.entropy == pytest.approx(entropy, abs=1e-4)
    target = readout.target
    assert target is not None and target[0] == tokenizer(TEXT, add_special_tokens=False)["input_ids"][position]
    assert last.target_probability == pytest.approx(probabilities[target[0]].item(), abs=1e-6)


def test_every_layer_of_the_lens_is_the_final_norm_and_head_over_its_hidden_state(tokenizer) -> None:
    model = gpt2(tokenizer)
    sequence, _ = reference_logits(model, tokenizer, TEXT)
    position = 7
    with torch.no_grad():
        hidden = model(sequence, output_hidden_states=True).hidden_states
        assert len(hidden) == model.config.n_layer + 1
        expected = []
        for layer, state in enumerate(hidden):
            vector = state[0, position]
            # transformers hands back the last layer's state with the final norm already applied.
            normed = vector if layer == len(hidden) - 1 else model.transformer.ln_f(vector)
            expected.append(torch.softmax(model.lm_head(normed), -1))
    readout = logit_lens(model, tokenizer, TEXT, position, top=3)
    assert [layer.layer for layer in readout.layers] == list(range(model.config.n_layer + 1))
    assert readout.layers[0].name == "embeddings" and readout.layers[-1].name == "block 3"
    for layer, probabilities in zip(readout.layers, expected, strict=True):
        best = probabilities.topk(3)
        assert [t.token_id for t in layer.top] == best.indices.tolist()
        assert [t.probability for t in layer.top] == pytest.approx(best.values.tolist(), abs=1e-6)
        target = sequence[0, position + 1].item()
        assert layer.target_rank == 1 + int((probabilities > probabilities[target]).sum())


def test_the_lens_at_a_tokens_place_agrees_with_its_score_and_past_the_end_has_no_target(tokenizer) -> None:
    model = gpt2(tokenizer)
    score = score_text(model, tokenizer, TEXT)
    for position in (0, 4, len(score.tokens) - 1):
        final = logit_lens(model, tokenizer, TEXT, position).layers[-1]
        assert final.target_probability == pytest.approx(score.tokens[position].probability, rel=1e-5)
        assert final.target_rank == score.tokens[position].rank
    after = logit_lens(model, tokenizer, TEXT)  # -1: the place after the text
    assert after.position == len(score.tokens) and after.target is None
    assert after.after == score.tokens[-1].text
    assert logit_lens(model, tokenizer, TEXT, -(len(score.tokens) + 1)).position == 0


def test_the_lens_reads_a_kept_score_without_running_the_model_and_says_the_same(tokenizer) -> None:
    model = gpt2(tokenizer, n_positions=16)
    text = tokenizer.decode(tokenizer(TEXT * 2, add_special_tokens=False)["input_ids"][:40])
    score = score_text(model, tokenizer, text, keep_states=True)
    assert score.states is not None and score.states.shape == (41, 4, 32)
    for position in (0, 14, 15, 20, 39, 40):  # in every window, and past the end
        fresh = logit_lens(model, tokenizer, text, position, top=4)
        kept = logit_lens(model, tokenizer, text, position, top=4, score=score)
        assert [t.token_id for t in kept.layers[-1].top] == [t.token_id for t in fresh.layers[-1].top]
        for a, b in zip(kept.layers, fresh.layers, strict=True):
            assert [t.probability for t in a.top] == pytest.approx([t.probability for t in b.top], abs=1e-5)
        if position < 40:
            assert kept.layers[-1].target_probability == pytest.approx(score.tokens[position].probability, rel=1e-4)


@pytest.mark.parametrize("build", [LlamaForCausalLM, GPTNeoXForCausalLM], ids=["llama", "gpt_neox"])
def test_the_lens_is_refused_for_other_architectures_but_they_still_score(tokenizer, build) -> None:
    torch.manual_seed(0)
    sizes = dict(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=2)
    sizes |= dict(num_attention_heads=4, max_position_embeddings=64)
    config = (LlamaConfig if build is LlamaForCausalLM else GPTNeoXConfig)(**sizes)
    model = build(config).eval()
    kind = config.model_type
    message = f"model: the logit lens is not supported for {kind} models; it works for GPT-2 family models."
    with pytest.raises(SettingsError) as refused:
        logit_lens(model, tokenizer, TEXT)
    assert str(refused.value) == message
    score = score_text(model, tokenizer, TEXT, keep_states=True)
    assert score.states is None and len(score.tokens) > 5


def test_a_position_outside_the_text_and_a_bad_top_are_refused_saying_the_range(tokenizer) -> None:
    model = gpt2(tokenizer)
    tokens = len(tokenizer("a fox", add_special_tokens=False)["input_ids"])
    with pytest.raises(SettingsError) as past:
        logit_lens(model, tokenizer, "a fox", tokens + 1)
    assert str(past.value) == (
        f"position: {tokens + 1} is past the end: this text has {tokens} tokens, so use 0 to {tokens} "
        f"({tokens}: the place after the text), or -1 to -{tokens + 1} to count back from there."
    )
    with pytest.raises(SettingsError, match=f"position: -{tokens + 2} is before the start"):
        logit_lens(model, tokenizer, "a fox", -(tokens + 2))
    with pytest.raises(SettingsError, match="this text has 1 token, so use 0 to 1 "):
        logit_lens(model, tokenizer, "a", 2)
    with pytest.raises(SettingsError, match="top: 0 is out of range; use a whole number from 1 to 100"):
        logit_lens(model, tokenizer, "a fox", top=0)
    with pytest.raises(SettingsError, match="top: 101 is out of range"):
        logit_lens(model, tokenizer, "a fox", top=101)


# ---------------------------------------------------------------------------
# Text files


def test_a_text_file_is_read_as_utf8_and_each_bad_file_refused_in_one_line(tmp_path: Path) -> None:
    good = tmp_path / "good.txt"
    good.write_bytes("\ufeffThe fox, naïve.\n".encode())
    assert read_text_file("text_file", good) == "The fox, naïve.\n"  # the byte order mark is not text
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"first line\nna\xefve\n")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    cases = {
        tmp_path / "missing.txt": "there is no file",
        tmp_path: "is a folder",
        latin: "is not UTF-8 text: line 2 holds the byte 0xef (at byte offset 13)",
        empty: "is empty",
    }
    for path, words in cases.items():
        with pytest.raises(SettingsError, match=re.escape(words)) as refused:
            read_text_file("text_file", path)
        assert refused.value.field == "text_file" and "\n" not in str(refused.value)


# ---------------------------------------------------------------------------
# The command line


@pytest.fixture(scope="module")
def twin_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Another random 2-layer GPT-2 with the very same tokenizer as tiny_model_dir's."""
    return build_tiny_gpt2(tmp_path_factory.mktemp("tiny-gpt2-twin"), seed=1)


def test_lmwb_score_prints_the_text_and_totals_and_json_with_the_other_models_logprobs(
    capsys, tiny_model_dir: Path, twin_model_dir: Path
) -> None:
    status, out, err = lmwb_in_process(capsys, "score", "--model", str(tiny_model_dir), "--text", TEXT)
    assert status == 0, err
    assert TEXT in out and "bits per byte" in out and "Most surprising" in out

    status, out, err = lmwb_in_process(
        capsys, "score", "--model", str(tiny_model_dir), "--against", str(twin_model_dir), "--text", TEXT, "--json"
    )
    assert status == 0, err
    answer = json.loads(out)
    assert answer["model"] == str(tiny_model_dir) and answer["against"] == str(twin_model_dir)
    model = GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()
    tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
    sequence, _ = reference_logits(model, tokenizer, TEXT)
    with torch.no_grad():
        loss = model(sequence, labels=sequence).loss.item()
    assert answer["total_logprob"] == pytest.approx(-loss * (sequence.shape[1] - 1), abs=1e-4)
    assert sum(row["logprob"] for row in answer["tokens"]) == pytest.approx(answer["total_logprob"], abs=1e-6)
    assert "".join(row["text"] for row in answer["tokens"]) == TEXT
    assert all(set(row) == {"id", "text", "logprob", "rank", "entropy", "against_logprob"} for row in answer["tokens"])
    assert answer["loss"] == pytest.approx(loss, abs=1e-5) and answer["bits_per_byte"] > 0


def test_lmwb_lens_prints_a_row_per_layer_and_json(capsys, tiny_model_dir: Path, tmp_path: Path) -> None:
    text_file = tmp_path / "text.txt"
    text_file.write_text(TEXT, encoding="utf-8")
    status, out, err = lmwb_in_process(
        capsys, "lens", "--model", str(tiny_model_dir), "--text-file", str(text_file), "--position", "3", "--top", "2"
    )
    assert status == 0, err
    assert "position 3 of" in out and "emb" in out and "2 out" in out and "#2" in out and "#3" not in out

    status, out, err = lmwb_in_process(capsys, "lens", "--model", str(tiny_model_dir), "--text", TEXT, "--json")
    assert status == 0, err
    answer = json.loads(out)
    assert answer["target"] is None and answer["position"] == answer["tokens"]
    assert [layer["name"] for layer in answer["layers"]] == ["embeddings", "block 1", "block 2"]
    assert all(len(layer["top"]) == 5 for layer in answer["layers"])


def test_lmwb_score_and_lens_say_what_is_wrong_in_one_line(capsys, tiny_model_dir: Path, tmp_path: Path) -> None:
    model = str(tiny_model_dir)
    other = str(build_tiny_gpt2(tmp_path / "other", vocab_size=280))
    latin = tmp_path / "latin.txt"
    latin.write_bytes(b"na\xefve")
    empty = tmp_path / "empty.txt"
    empty.write_bytes(b"")
    refusals = [
        (("score", "--model", model, "--text", ""), "--text: is empty"),
        (("score", "--model", model, "--text-file", str(tmp_path / "nope.txt")), "--text-file: there is no file"),
        (("score", "--model", model, "--text-file", str(tmp_path)), "--text-file: " + str(tmp_path) + " is a folder"),
        (("score", "--model", model, "--text-file", str(latin)), "--text-file: " + str(latin) + " is not UTF-8"),
        (("score", "--model", model, "--text-file", str(empty)), "is empty"),
        (("score", "--model", model, "--against", other, "--text", TEXT), "--against: these models tokenize differ"),
        (("lens", "--model", model, "--text", "a fox", "--position", "99"), "--position: 99 is past the end"),
        (("lens", "--model", model, "--text", "a fox", "--top", "0"), "--top: 0 is out of range"),
        (("lens", "--model", model, "--text", ""), "--text: is empty"),
        (("lens", "--model", model), "one of the arguments --text --text-file is required"),
        (("score", "--model", "scratch:nano", "--text", TEXT), "--dataset"),
    ]
    capsys.readouterr()  # what building the other model wrote
    for arguments, words in refusals:
        status, out, err = lmwb_in_process(capsys, *arguments)
        assert_one_line_error(status, err, words)
        assert out == ""


# ---------------------------------------------------------------------------
# The Inspect screen


async def open_inspect(pilot) -> InspectScreen:
    await wait_until(pilot, lambda: pilot.app.engine_loaded)
    await pilot.press("6")
    await wait_until(pilot, lambda: isinstance(pilot.app.screen, InspectScreen))
    return pilot.app.screen


@story
async def test_score_a_text_walk_its_tokens_and_watch_the_lens_follow(tiny_model_dir: Path) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_inspect(pilot)
        screen.query_one("#model-a", Input).value = str(tiny_model_dir)
        screen.query_one("#text", TextArea).text = TEXT
        await pilot.press("ctrl+r")
        view = screen.query_one("#scored", ScoredTextView)
        await wait_until(pilot, lambda: view.display and view.cursor == 0)
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        pieces = text_tokens(tokenizer, TEXT)[1]
        assert "".join(token.text for token in view.tokens) == TEXT
        model = GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval()
        expected = score_text(model, tokenizer, TEXT)
        assert [token.colour for token in view.tokens] == [surprise_colour(t.surprise) for t in expected.tokens]
        assert f"{len(pieces)} tokens" in str(view.border_title)
        totals = shown_text(screen.query_one("#totals", Static))
        assert f"loss {expected.loss:.3f}" in totals and f"{expected.bits_per_byte:.3f} bits/byte" in totals

        lens = screen.query_one("#lens", Static)
        await wait_until(pilot, lambda: "2 out" in shown_text(lens))
        await pilot.press("right", "right", "right")
        assert "guesses for #3" in shown_text(screen.query_one("#lens-title", Label))
        detail = shown_text(screen.query_one("#token-detail", Static))
        assert "#3" in detail and f"{expected.tokens[3].rank}" in detail
        final = logit_lens(model, tokenizer, TEXT, 3).layers[-1]  # the lens row of the model's output
        row = rf"2 out +{final.entropy:.1f} .* #{final.target_rank} "
        await wait_until(pilot, lambda: re.search(row, shown_text(lens)) is not None)
        assert final.top[0].text.replace(" ", "·") in shown_text(lens)
        await pilot.press("down")  # a line down: a later token
        assert view.cursor is not None and view.cursor > 3

        await pilot.press("ctrl+t")  # back to the text, which is kept
        assert screen.query_one("#text", TextArea).has_focus and not view.display


@story
async def test_two_models_colour_the_difference_and_a_bad_text_is_said_in_place(
    tiny_model_dir: Path, twin_model_dir: Path
) -> None:
    app = WorkbenchApp()
    async with app.run_test(size=(80, 24)) as pilot:
        screen = await open_inspect(pilot)
        screen.query_one("#model-a", Input).value = str(tiny_model_dir)
        await pilot.press("ctrl+b")
        screen.query_one("#model-b", Input).value = str(twin_model_dir)
        screen.query_one("#text", TextArea).text = ""
        await pilot.press("ctrl+r")
        totals = screen.query_one("#totals", Static)
        await wait_until(pilot, lambda: "text: is empty" in shown_text(totals))
        assert not screen.scoring

        screen.query_one("#text", TextArea).text = TEXT
        await pilot.press("ctrl+r")
        view = screen.query_one("#scored", ScoredTextView)
        await wait_until(pilot, lambda: view.display and view.cursor == 0 and "B loss" in shown_text(totals))
        tokenizer = AutoTokenizer.from_pretrained(tiny_model_dir)
        a = score_text(GPT2LMHeadModel.from_pretrained(tiny_model_dir).eval(), tokenizer, TEXT)
        b = score_text(GPT2LMHeadModel.from_pretrained(twin_model_dir).eval(), tokenizer, TEXT)
        differences = [y.surprise - x.surprise for x, y in zip(a.tokens, b.tokens, strict=True)]
        assert [token.colour for token in view.tokens] == [difference_colour(d) for d in differences]
        assert "B more surprised" in str(view.border_subtitle)
        await pilot.press("end")
        detail = shown_text(screen.query_one("#token-detail", Static))
        assert "B − A" in detail and f"{differences[-1]:+.2f}" in detail


def test_the_difference_colours_run_from_grey_to_red_for_more_and_blue_for_less_surprise() -> None:
    assert difference_colour(0.0) == "rgb(150,150,150)"
    assert difference_colour(5.0) == difference_colour(50.0) == "rgb(235,70,60)"
    assert difference_colour(-5.0) == "rgb(70,150,245)"
    assert surprise_colour(0.0) != surprise_colour(10.0)


def test_text_scores_and_lens_readouts_are_plain_values(tokenizer) -> None:
    score = score_text(gpt2(tokenizer), tokenizer, "a fox")
    assert isinstance(score, TextScore) and json.dumps(score.as_dict())
    readout = logit_lens(gpt2(tokenizer), tokenizer, "a fox", 0)
    assert isinstance(readout, LensReadout) and json.dumps(readout.as_dict())
    assert readout.after == "" and readout.target is not None
