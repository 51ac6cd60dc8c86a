"""A dataset check as people read it: one layout for ``lmwb datasets check`` and the Datasets screen's Check view.

The sections come in the report's order, each saying "clean" plainly when it
is; the findings close it. The terminal gets the length histogram as bars of
text; the screen draws it as a plot instead (``HealthView``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

from rich.console import Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from tui.widgets.formatting import human_bytes

if TYPE_CHECKING:
    from engine.dataset_health import HealthReport, LengthBucket

BAR_WIDTH = 40  # characters of the fullest bucket's bar


def health_report(report: HealthReport, *, bars: bool = True) -> Group:
    """The title, every section (the length histogram as text bars when ``bars``), then the findings."""
    parts: list[RenderableType] = [Text(_title(report), style="bold")]
    for title, lines in health_sections(report, bars=bars):
        parts.append(Text(""))
        parts.append(Text(title, style="bold underline"))
        parts.extend(
            Padding(line if isinstance(line, Text) else Text(line), (0, 0, 0, 2), expand=False) for line in lines
        )
    parts.append(Text(""))
    parts.extend(_findings(report))
    return Group(*parts)


def _title(report: HealthReport) -> str:
    documents = f"{report.documents:,} document{'s' if report.documents != 1 else ''}"
    return f"Dataset {report.dataset} · {documents} · {report.lines:,} non-blank lines · {human_bytes(report.bytes)}"


def _findings(report: HealthReport) -> list[RenderableType]:
    findings = report.findings()
    if not findings:
        return [Text("Clean: nothing here needs fixing before training.", style="bold green")]
    heading = Text(f"{len(findings)} finding{'s' if len(findings) != 1 else ''}:", style="bold yellow")
    return [heading, *(Padding(Text(f"• {finding}"), (0, 0, 0, 2), expand=False) for finding in findings)]


def health_sections(report: HealthReport, *, bars: bool = True) -> list[tuple[str, list[Text | str]]]:
    """(title, lines) of each section of a report."""
    from engine.dataset_health import leakage_advice

    duplicates, near, leakage = report.duplicates, report.near_duplicates, report.leakage
    exact: list[Text | str] = []
    if not duplicates.documents and not duplicates.lines:
        exact.append("clean: no document and no line repeats an earlier one")
    else:
        exact.append(
            f"{duplicates.documents:,} of {report.documents:,} documents ({duplicates.document_fraction:.1%}) "
            f"{_agreeing(duplicates.documents, 'copy')} an earlier one; {duplicates.lines:,} of {report.lines:,} "
            f"non-blank lines ({duplicates.line_fraction:.1%}) {_agreeing(duplicates.lines, 'repeat')} an earlier line"
        )
        for label, repeated in (("documents", duplicates.top_documents), ("lines", duplicates.top_lines)):
            if repeated:
                exact.append(Text(f"most repeated {label}:", style="dim"))
                exact.extend(_one_line(f"  ×{item.count:<4,} {item.text}") for item in repeated)
    close: list[Text | str] = ["clean: no document nearly copies an earlier one"]
    if near.documents:
        close = [
            f"{near.documents:,} of {report.documents:,} documents ({near.fraction:.1%}) nearly "
            f"{_agreeing(near.documents, 'copy')} an earlier one"
        ]
    close.extend(
        _one_line(f"  #{pair.second} ≈ #{pair.first} ({pair.similarity:.2f}): {pair.second_text}")
        for pair in near.examples
    )
    bytes_only = leakage.tokenizer == "bytes"
    source = "UTF-8 bytes as tokens: no model given" if bytes_only else f"tokens of {leakage.tokenizer}"
    leaks: list[Text | str] = [leakage.ngram_note]
    if leakage.fraction is not None:
        leaks = [leakage_advice(leakage) if leakage.leaked else "clean: no validation window occurs in training"]
        note = f" ({leakage.ngram_note})" if leakage.ngram_note else ""
        unit = "bytes" if bytes_only else "tokens"
        windows = (
            f"{leakage.leaked:,} of {leakage.windows:,} validation windows (runs of {leakage.ngram} {unit}, "
            f"or a shorter document whole){note}"
        )
        leaks.append(Text(windows, style="dim"))
    encoding: list[Text | str] = []
    if not report.encoding:
        encoding.append("clean: no replacement characters, mojibake, control characters or very long lines")
    for problem in report.encoding:
        places = ", ".join(f"document {place.document} line {place.line}" for place in problem.locations)
        encoding.append(f"{problem.description}: {problem.count:,}")
        encoding.append(Text(f"  first at {places}", style="dim"))
    sections: list[tuple[str, list[Text | str]]] = [
        ("Exact duplicates", exact),
        (f"Near duplicates ({near.shingle_words}-word shingles, similarity ≥ {near.threshold:g})", close),
        (f"Train/validation leakage ({source})", leaks),
        ("Encoding", encoding),
    ]
    if bars:
        sections.append(("Document lengths (characters)", length_bars(report.lengths)))
    if report.model is not None:
        fit = report.model
        measured = (
            f"{fit.tokens:,} tokens · {fit.bytes_per_token:.2f} bytes per token · {fit.parameters:,} parameters · "
            f"{fit.tokens_per_parameter:.2g} tokens per parameter"
        )
        sections.append((f"Tokens against {fit.model}", [measured, fit.advice]))
    return sections


def _one_line(text: str) -> Text:
    """A quoted piece of the data: cut at the edge with an ellipsis rather than folded over lines."""
    return Text(text, no_wrap=True, overflow="ellipsis")


def _agreeing(count: int, verb: str) -> str:
    """The verb agreeing with "N of M documents": "1 of 9 documents copies", "2 of 9 documents copy"."""
    if count != 1:
        return verb
    return verb[:-1] + "ies" if verb.endswith("y") else verb + "s"


def length_bars(buckets: Sequence[LengthBucket], width: int = BAR_WIDTH) -> list[Text | str]:
    """A text histogram: one bar per bucket, scaled to the fullest."""
    most = max(bucket.documents for bucket in buckets)
    lines: list[Text | str] = []
    for bucket in buckets:
        bar = "█" * max(round(width * bucket.documents / most), 1 if bucket.documents else 0)
        lines.append(Text(f"{bucket.label():>9} ") + Text(bar, style="cyan") + Text(f" {bucket.documents:,}"))
    return lines
