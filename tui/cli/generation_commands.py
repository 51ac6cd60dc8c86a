"""`lmwb generate`, `lmwb history`, `lmwb score` and `lmwb lens`: what a model writes, and how it reads a text.

A generation streamed token by token and recorded; the past ones, searched;
every token of a text scored by surprise (against a second model too); and
what each layer of a GPT-2 predicts at one place (the logit lens).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich import box
from rich.table import Table
from rich.text import Text

from tui.cli.common import (
    EXIT_OK,
    SPLIT_FLAG,
    CommandError,
    add_flags,
    add_split_flag,
    device_name,
    flags_given,
    number,
    open_store,
    positive_int,
    settings_named_by_flags,
    stop_on_signals,
    whole_number,
)
from tui.cli.output import local_time, new_table, plain_dict, print_json, shortened, status_spinner, stdout_console

if TYPE_CHECKING:
    from engine.store import RunStore


def add_parsers(commands: argparse._SubParsersAction) -> None:
    """`lmwb generate`, `lmwb score`, `lmwb lens` and `lmwb history`."""
    _add_generate_parser(commands)
    _add_score_parser(commands)
    _add_lens_parser(commands)
    _add_history_parser(commands)


# Sampling flags: (flag, the GenerationSettings field it sets, type, help).
GENERATION_FLAGS = (
    ("--max-new-tokens", "max_new_tokens", whole_number, "how many tokens at most"),
    ("--temperature", "temperature", number, "0 is greedy; higher is more random"),
    ("--top-k", "top_k", whole_number, "sample from the k likeliest tokens (0: all)"),
    ("--top-p", "top_p", number, "sample from the smallest set of tokens holding this probability"),
    ("--repetition-penalty", "repetition_penalty", number, "above 1 discourages repeats"),
    ("--seed", "seed", whole_number, "same seed, same text"),
    ("--alternatives", "alternatives", whole_number, "top alternatives per token in --json"),
)


def _add_generate_parser(commands: argparse._SubParsersAction) -> None:
    generate = commands.add_parser(
        "generate",
        help="stream text from a model, token by token",
        description="Stream text from a model. Text goes to stdout as each token arrives; "
        "a summary goes to stderr. Ctrl+C stops and still records the generation.",
    )
    generate.add_argument("--model", required=True, metavar="SRC", help="model source (see 'lmwb models')")
    prompt = generate.add_mutually_exclusive_group()
    prompt.add_argument("--prompt", metavar="TEXT", help="the prompt; '-' reads it from stdin (as does a pipe)")
    prompt.add_argument("--prompt-file", type=Path, metavar="FILE", help="read the prompt from a UTF-8 file")
    sampling = generate.add_argument_group("sampling settings (defaults: the engine's GenerationSettings)")
    add_flags(sampling, GENERATION_FLAGS)
    sampling.add_argument(
        "--stop", action="append", default=[], metavar="TEXT", help="stop when this text appears (repeatable)"
    )
    generate.add_argument("--dataset", metavar="PATH_OR_NAME", help="for scratch: models, the tokenizer's dataset")
    add_split_flag(generate)
    generate.add_argument(
        "--device", type=device_name, default="auto", metavar="DEVICE", help="auto (default), cpu, cuda[:N] or mps"
    )
    generate.add_argument("--json", action="store_true", help="one JSON object per token, then a summary")
    generate.set_defaults(handler=cmd_generate)


def _add_score_parser(commands: argparse._SubParsersAction) -> None:
    score = commands.add_parser(
        "score",
        help="how surprised a model is by each token of a text, and its loss and bits per byte",
        description="Score every token of a text: its log-probability (natural log) given the tokens before it, "
        "its rank (1: the model's first choice), the entropy of the prediction and the surprise (bits); then the "
        "summed log-probability, the loss per token and bits per byte. The first token is scored from the "
        "start-of-text token; a text longer than the model's context is read in sliding windows half a context "
        "apart, each token scored once. In a terminal the text is coloured by surprise (with --against: by B's "
        "surprise minus A's, red where B is more surprised, blue where less).",
    )
    score.add_argument("--model", required=True, metavar="SRC", help="model source (see 'lmwb models')")
    score.add_argument(
        "--against", metavar="SRC", help="a second model with the same tokenizer: both scores, token by token"
    )
    _add_text_flags(score)
    score.add_argument("--json", action="store_true", help="every token and the totals as JSON")
    score.set_defaults(handler=cmd_score)


def _add_lens_parser(commands: argparse._SubParsersAction) -> None:
    lens = commands.add_parser(
        "lens",
        help="the logit lens: what each layer of a GPT-2 model predicts at one place of a text",
        description="The final layer norm and the LM head applied to the hidden state after the embeddings and "
        "after every block, at one position: each layer's likeliest tokens, its entropy (bits), and the "
        "probability and rank it gives the token really there. Position P is token P's place (read from the "
        "token before it); the default, the number of tokens (or -1), is the place after the text. The last "
        "layer is the model's own output. GPT-2 family models only.",
    )
    lens.add_argument("--model", required=True, metavar="SRC", help="model source (see 'lmwb models')")
    _add_text_flags(lens)
    lens.add_argument(
        "--position",
        type=whole_number,
        metavar="P",
        help="token P's place, 0 for the first; negative counts back from the place after the text (default: -1)",
    )
    lens.add_argument("--top", type=whole_number, metavar="K", help="likeliest tokens per layer (default: 5)")
    lens.add_argument("--json", action="store_true", help="every layer's readout as JSON")
    lens.set_defaults(handler=cmd_lens)


def _add_text_flags(parser: argparse.ArgumentParser) -> None:
    """The text a command reads: --text or --text-file, one of them; and how its models load."""
    text = parser.add_mutually_exclusive_group(required=True)
    text.add_argument("--text", metavar="TEXT", help="the text")
    text.add_argument("--text-file", type=Path, metavar="FILE", help="read the text from a UTF-8 file")
    parser.add_argument("--dataset", metavar="PATH_OR_NAME", help="for scratch: models, the tokenizer's dataset")
    add_split_flag(parser)
    parser.add_argument(
        "--device", type=device_name, default="auto", metavar="DEVICE", help="auto (default), cpu, cuda[:N] or mps"
    )


def _add_history_parser(commands: argparse._SubParsersAction) -> None:
    history = commands.add_parser("history", help="past generations, with full-text search")
    history.add_argument("--search", metavar="QUERY", help="full-text search over prompts and texts")
    history.add_argument("--limit", type=positive_int, default=20, help="how many to show (default: 20)")
    history.add_argument("--json", action="store_true", help="print JSON for scripts")
    history.set_defaults(handler=cmd_history)


# ---------------------------------------------------------------------------
# lmwb generate and lmwb history


# The flags naming a scratch: model's dataset, for the settings' errors (generate, score, lens).
DATASET_FLAGS = {"dataset": "--dataset"} | SPLIT_FLAG


def cmd_generate(args: argparse.Namespace) -> int:
    """Stream a model's text token by token; record the generation, even when stopped by Ctrl+C."""
    from engine.generation import GenerationSettings, TokenStream, record_generation
    from engine.models import ModelRequest

    prompt = read_prompt(args)
    given = flags_given(args, [field for _, field, _, _ in GENERATION_FLAGS])
    settings = GenerationSettings(**given, stop=tuple(args.stop))
    with settings_named_by_flags({field: flag for flag, field, _, _ in GENERATION_FLAGS} | {"stop": "--stop"}):
        settings.validate()
    store = open_store()
    request = ModelRequest.of(args.model, args.dataset, dataset_split=args.dataset_split)
    with settings_named_by_flags(DATASET_FLAGS), status_spinner(f"Loading {request.source}…") as update:
        loaded = request.load(device=args.device, store=store, progress=update)

    stream = TokenStream(loaded.model, loaded.tokenizer, prompt, settings)
    with stop_on_signals(stream.cancel):
        for event in stream:
            if args.json:
                sys.stdout.write(json.dumps({"type": "token", **plain_dict(event)}, ensure_ascii=False) + "\n")
            else:
                sys.stdout.write(event.text)
            sys.stdout.flush()
    result = stream.result
    if result is None:  # a stream that was iterated to its end always holds its result
        raise RuntimeError("the token stream ended without a result")
    generation_id = record_generation(store, str(loaded.source), result, settings)

    if args.json:
        summary = {
            "type": "summary",
            "id": generation_id,
            "model": str(loaded.source),
            "prompt": result.prompt,
            "text": result.text,
            "tokens": len(result.token_ids),
            "finish_reason": result.finish_reason,
            "tokens_per_second": result.tokens_per_second,
            "time_to_first_token": result.time_to_first_token,
            "elapsed": result.elapsed,
            "settings": settings.as_dict(),
        }
        sys.stdout.write(json.dumps(summary, ensure_ascii=False) + "\n")
    else:
        if not result.text.endswith("\n"):
            sys.stdout.write("\n")
        print(
            f"{len(result.token_ids)} tokens · {result.tokens_per_second:.1f} tok/s · "
            f"first token {result.time_to_first_token * 1000:.0f} ms · finish: {result.finish_reason} · "
            f"saved as generation {generation_id}",
            file=sys.stderr,
        )
    sys.stdout.flush()
    return EXIT_OK


def read_prompt(args: argparse.Namespace) -> str:
    """The prompt from --prompt, --prompt-file, or stdin ('-' or a pipe)."""
    if args.prompt_file is not None:
        try:
            return args.prompt_file.read_text(encoding="utf-8")
        except OSError as error:
            raise CommandError(f"Cannot read the prompt file {args.prompt_file}: {error.strerror}.") from None
        except UnicodeDecodeError:
            raise CommandError(f"The prompt file {args.prompt_file} is not UTF-8 text; save it as UTF-8.") from None
    if args.prompt == "-" or (args.prompt is None and not sys.stdin.isatty()):
        return sys.stdin.read()
    if args.prompt is None:
        raise CommandError("Give a prompt: --prompt TEXT, --prompt-file FILE, or pipe it on stdin.")
    return args.prompt


def cmd_history(args: argparse.Namespace) -> int:
    """Past generations, newest first, optionally searched."""
    rows = open_store().generations(search=args.search, limit=args.limit)
    if args.json:
        print_json(rows)
        return EXIT_OK
    if not rows:
        found = "matching that search" if args.search else "yet"
        stdout_console().print(f"No generations {found}. Make one with: lmwb generate --model SRC --prompt TEXT")
        return EXIT_OK
    table_rows = [
        [
            row["id"],
            local_time(row["created_at"]),
            row["model"],
            shortened(row["prompt"], 30),
            shortened(row["text"], 50),
            row["token_count"],
            row["finish_reason"],
        ]
        for row in rows
    ]
    columns = ["id", "created", "model", "prompt", "text", "tokens", "finish"]
    stdout_console().print(new_table("Generations", columns, table_rows))
    return EXIT_OK


# ---------------------------------------------------------------------------
# lmwb score and lmwb lens

TEXT_FLAGS = {"text": "--text", "text_file": "--text-file"} | DATASET_FLAGS
SURPRISING_SHOWN = 5  # tokens listed under a scored text


def read_text(args: argparse.Namespace) -> str:
    """The text of --text or --text-file (read and checked before any model loads)."""
    from engine.checks import read_text_file

    if args.text_file is None:
        return args.text
    with settings_named_by_flags(TEXT_FLAGS):
        return read_text_file("text_file", args.text_file)


def _load_for_text(args: argparse.Namespace, source: str, store: RunStore) -> Any:
    """A model named on the command line, loaded as `lmwb generate` loads it."""
    from engine.models import ModelRequest

    request = ModelRequest.of(source, args.dataset, dataset_split=args.dataset_split)
    with settings_named_by_flags(TEXT_FLAGS), status_spinner(f"Loading {request.source}…") as update:
        return request.load(device=args.device, store=store, progress=update)


def cmd_score(args: argparse.Namespace) -> int:
    """Every token's logprob, rank and entropy, and the totals; with --against, the second model's too."""
    from engine.inspection import score_text

    text = read_text(args)
    store = open_store()
    loaded = _load_for_text(args, args.model, store)
    other = None if args.against is None else _load_for_text(args, args.against, store)
    flags = TEXT_FLAGS | {"against": "--against", "model": "--model"}
    with settings_named_by_flags(flags), status_spinner("Scoring…") as update:
        score = score_text(
            loaded.model,
            loaded.tokenizer,
            text,
            against=None if other is None else (other.model, other.tokenizer),
            progress=lambda done, total: update(f"Scoring: window {done} of {total}…"),
        )
    models = {"model": str(loaded.source)} | ({} if other is None else {"against": str(other.source)})
    if args.json:
        print_json(models | score.as_dict())
        return EXIT_OK
    _print_score(score, models)
    return EXIT_OK


def _print_score(score: Any, models: dict[str, str]) -> None:
    """The text coloured token by token, the totals of each model, and the tokens that stand out."""
    from tui.widgets.scored_text import token_colours

    console = stdout_console()
    against = score.against
    surprises = [token.surprise for token in score.tokens]
    colours = token_colours(surprises, None if against is None else [token.surprise for token in against.tokens])
    rendering = Text()
    for token, colour in zip(score.tokens, colours, strict=True):
        rendering.append(token.text, style=colour)
    console.print(rendering)
    console.print(
        Text(
            "Coloured by B's surprise minus A's: red where B is more surprised, blue where less."
            if against
            else "Coloured by surprise: green for a likely token, red from 10 bits (1 in 1,000).",
            style="dim",
        )
    )
    totals = Table(box=box.SIMPLE_HEAD, title_justify="left")
    for column in ("", "model", "tokens", "total logprob", "loss (nats/token)", "bits per byte"):
        totals.add_column(column, overflow="fold")
    for side, each in (("A", score), ("B", against)):
        if each is not None:
            name = models["model" if side == "A" else "against"]
            totals.add_row(
                side if against else "",
                name,
                f"{len(each.tokens):,}",
                f"{each.total_logprob:.4f}",
                f"{each.loss:.4f}",
                f"{each.bits_per_byte:.4f}",
            )
    console.print(totals)
    console.print(_standing_out(score))


def _standing_out(score: Any) -> Table:
    """The most surprising tokens; with a second model, those where the two differ most."""
    from tui.widgets.scored_text import probability_text, token_label

    against = score.against
    indices = range(len(score.tokens))
    if against is None:
        chosen = sorted(indices, key=lambda i: -score.tokens[i].surprise)[:SURPRISING_SHOWN]
        title = "Most surprising"
    else:
        chosen = sorted(indices, key=lambda i: -abs(against.tokens[i].surprise - score.tokens[i].surprise))
        chosen = chosen[:SURPRISING_SHOWN]
        title = "Where A and B differ most"
    table = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD)
    columns = ["#", "token", "p", "rank", "entropy (bits)", "surprise (bits)"]
    if against is not None:
        columns += ["B p", "B rank", "B − A (bits)"]
    for column in columns:
        table.add_column(column, justify="left" if column == "token" else "right", no_wrap=True)
    for index in chosen:
        token = score.tokens[index]
        row = [
            str(index),
            token_label(token.text, 20),
            probability_text(token.probability),
            f"{token.rank:,}",
            f"{token.entropy:.2f}",
            f"{token.surprise:.2f}",
        ]
        if against is not None:
            other = against.tokens[index]
            row += [probability_text(other.probability), f"{other.rank:,}", f"{other.surprise - token.surprise:+.2f}"]
        table.add_row(*row)
    return table


def cmd_lens(args: argparse.Namespace) -> int:
    """Each layer's likeliest tokens at one position of the text (GPT-2 family models)."""
    from engine.inspection import logit_lens
    from tui.widgets.lens_table import lens_table
    from tui.widgets.scored_text import token_label

    text = read_text(args)
    loaded = _load_for_text(args, args.model, open_store())
    flags = TEXT_FLAGS | {"model": "--model", "position": "--position", "top": "--top"}
    with settings_named_by_flags(flags):
        readout = logit_lens(loaded.model, loaded.tokenizer, text, **flags_given(args, ("position", "top")))
    if args.json:
        print_json({"model": str(loaded.source)} | readout.as_dict())
        return EXIT_OK
    where = (
        f"the place after the text ({readout.tokens} tokens)"
        if readout.target is None
        else f"position {readout.position} of {readout.tokens}: the token there is {token_label(readout.target[1], 20)}"
        f" (id {readout.target[0]})"
    )
    after = f", read after {token_label(readout.after, 20)}" if readout.position > 0 else ", read from the start token"
    console = stdout_console()
    console.print(Text(f"Logit lens of {loaded.source} at {where}{after}", style="bold"), soft_wrap=True)
    console.print(lens_table(readout, token_width=16))
    console.print(
        Text(
            "H: the entropy of the layer's prediction. actual: the probability and rank it gives the token there "
            "(underlined where it is among the likeliest). The last layer is the model's own output.",
            style="dim",
        )
    )
    return EXIT_OK
