"""A form over a settings dataclass, validated in place as the user types.

Generation settings and the training configuration are dataclasses whose
``validate()`` raises ``SettingsError(field, message)``. This form shows one
input per dataclass field and, after every keystroke, parses the text, builds
the dataclass and asks it to validate itself; the message appears right under
the offending field. The rules live in the engine; the form only shows them.

A form can also take a comma list in a field (the Train form: a sweep):
``value_lists(name, text)`` turns such a text into its values, and ``varied``
holds them; the settings object is built and checked with each value in turn.

A long form can fold fields under headings (``sections``): the fields most
runs change stay in sight, the form fits an 80x24 terminal, and a screen
switch lays out a third of the widgets. A folded field opens its heading when
it shows an error or is filled with a value other than its default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.message import Message
from textual.widgets import Collapsible, Input, Label, Static

from engine.errors import SettingsError


class FieldParseError(ValueError):
    """The text in one input cannot become the field's type."""


def _field_kind(annotation: Any) -> tuple[type, bool]:
    """Return (base type, optional) for the annotation of a settings field."""
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        members = [arg for arg in typing.get_args(annotation) if arg is not type(None)]
        base, _ = _field_kind(members[0])
        return base, True
    if origin in (tuple, list):
        return origin, False
    return annotation, False


# A list field's items (the probe prompts) may hold commas, so they are typed separated by this.
LIST_SEPARATOR = "|"


def format_value(value: Any, annotation: Any = None) -> str:
    """The text an input shows for a field value (the inverse of parse_value)."""
    if value is None:
        return ""
    if annotation is not None and _field_kind(annotation)[0] is list:
        return f" {LIST_SEPARATOR} ".join(value)
    if isinstance(value, (tuple, list)):  # a list: a tuple that went through JSON
        return ", ".join(item.replace("\n", "\\n") for item in value)
    return str(value)


def parse_value(text: str, annotation: Any) -> Any:
    """Turn an input's text into a value of the field's type, or FieldParseError."""
    base, optional = _field_kind(annotation)
    text = text.strip()
    if text == "" and optional:
        return None
    if base is bool:
        if text.lower() in ("true", "yes", "on", "1"):
            return True
        if text.lower() in ("false", "no", "off", "0"):
            return False
        raise FieldParseError("type yes or no")
    if base is int:
        try:
            return int(text.replace("_", ""))
        except ValueError:
            raise FieldParseError("needs a whole number" + (" (or empty)" if optional else "")) from None
    if base is float:
        try:
            return float(text)
        except ValueError:
            raise FieldParseError("needs a number such as 0.5 or 3e-4" + (" (or empty)" if optional else "")) from None
    if base is tuple:
        return tuple(part.strip().replace("\\n", "\n") for part in text.split(",") if part.strip())
    if base is list:
        return [part.strip() for part in text.split(LIST_SEPARATOR) if part.strip()]
    return text


class ConfigForm(VerticalScroll):
    """One labelled input per field of a settings dataclass, with errors shown in place.

    ``settings()`` returns the validated dataclass, or None while any field is
    wrong (the reason is then visible under that field). It runs after every
    keystroke, so errors appear and clear as the user types. ``sections`` are
    (heading, field names) pairs folded under their heading, after the fields
    in no section. ``value_lists(name, text)`` returns a field's values when
    its text is a list of them (else None; SettingsError for a list the field
    cannot take); the form then posts ``Checked`` after every check, with the
    lists in ``varied``. A field that is itself a list (the probe prompts) is
    typed with its items separated by LIST_SEPARATOR and is never a sweep's
    list. ``placeholders`` are shown in empty fields, by field name.
    """

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    class Checked(Message):
        """The form was checked: ``errors`` and ``varied`` say what it holds now."""

    def __init__(
        self,
        settings_type: type,
        values: dict[str, Any] | None = None,
        *,
        sections: Sequence[tuple[str, Sequence[str]]] = (),
        value_lists: Callable[[str, str], list[Any] | None] | None = None,
        placeholders: dict[str, str] | None = None,
        id: str | None = None,
    ) -> None:
        super().__init__(id=id)
        self.settings_type = settings_type
        self._placeholders = placeholders or {}
        self._value_lists = value_lists
        self._hints = typing.get_type_hints(settings_type)
        self._fields = dataclasses.fields(settings_type)
        self._field_named = {field.name: field for field in self._fields}
        self._initial = {name: value for name, value in (values or {}).items() if name in self._hints}
        self._sections = sections
        self._section_of = {name: f"section-{number}" for number, (_, names) in enumerate(sections) for name in names}
        """The id of the heading each folded field is under."""
        if set(self._section_of) - set(self._hints):
            raise ValueError(
                f"sections name fields {settings_type.__name__} lacks: "
                f"{sorted(set(self._section_of) - set(self._hints))}"
            )
        self.errors: dict[str, str] = {}
        """What is wrong, by field name, as shown under each input."""
        self._shown_errors: dict[str, tuple[str, bool]] = {}
        """(message under it, marked invalid) by field, as on screen now."""
        self.varied: dict[str, list[Any]] = {}
        """The fields typed as lists of values (with value_lists), each with its values, in form order."""

    def compose(self) -> ComposeResult:
        yield from self._rows(field for field in self._fields if field.name not in self._section_of)
        for number, (heading, names) in enumerate(self._sections):
            folded = not any(
                self._differs_from_default(name, self._initial[name]) for name in names if name in self._initial
            )
            with Collapsible(title=heading, collapsed=folded, id=f"section-{number}", classes="form-section"):
                yield from self._rows(self._field_named[name] for name in names)

    def _rows(self, fields: Iterable[dataclasses.Field]) -> ComposeResult:
        """A labelled input per field, with the line under it where its error shows."""
        for field in fields:
            value = self._initial.get(field.name, self._default(field))
            with Horizontal(classes="form-row", id=f"row-{field.name}"):
                yield Label(field.name.replace("_", " "), classes="form-label")
                field_input = Input(
                    format_value(value, self._hints[field.name]),
                    placeholder=self._placeholders.get(field.name, ""),
                    id=f"field-{field.name}",
                    classes="form-input",
                    compact=True,
                )
                # A steady cursor: blinking repaints twice a second, GIL time a
                # training thread in this process would rather have.
                field_input.cursor_blink = False
                yield field_input
            yield Static("", id=f"error-{field.name}", classes="form-error")

    @staticmethod
    def _default(field: dataclasses.Field) -> Any:
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:
            return field.default_factory()
        return ""

    def _differs_from_default(self, name: str, value: Any) -> bool:
        hint = self._hints[name]
        return format_value(value, hint) != format_value(self._default(self._field_named[name]), hint)

    def _unfold(self, name: str) -> None:
        """Open the heading ``name`` is folded under, if it is."""
        if name in self._section_of:
            self.query_one(f"#{self._section_of[name]}", Collapsible).collapsed = False

    def on_mount(self) -> None:
        # Every input exists now (folded ones too). Values given while they were
        # being made (the model chosen meanwhile, say) go in as well.
        self._fill(self._initial)

    def focus_first(self) -> None:
        """Put the cursor in the first field, so the keyboard can start editing at once."""
        self.query(".form-input").first().focus()

    def focus_first_error(self) -> None:
        """Put the cursor in the first field that shows an error (after a refused start)."""
        for field in self._fields:
            if field.name in self.errors:
                self.query_one(f"#field-{field.name}", Input).focus()
                return

    def show_refused(self, field: str, reason: str) -> None:
        """Show beside its field a setting the engine refused on starting (one only it can check,
        such as a block size beyond the model's context), and put the cursor there."""
        self._show_errors({**self.errors, field: reason})
        self.focus_first_error()

    def set_values(self, values: dict[str, Any]) -> None:
        """Fill the inputs from a dict (e.g. a run's saved configuration) and revalidate.

        Keys that are not fields (say, from a run recorded by an older version)
        are ignored. A folded field given a value other than its default opens
        its heading, so the form never hides how it differs from the defaults.
        """
        values = {name: value for name, value in values.items() if name in self._hints}
        if self.is_mounted:
            self._fill(values)
        else:
            self._initial.update(values)  # filled in on mount

    def _fill(self, values: dict[str, Any]) -> None:
        for name, value in values.items():
            self.query_one(f"#field-{name}", Input).value = format_value(value, self._hints[name])
            if self._differs_from_default(name, value):
                self._unfold(name)
        self.settings()

    def set_value(self, name: str, value: Any) -> None:
        """Set one field's input (e.g. the model chosen on the Models screen)."""
        self.set_values({name: value})

    def settings(self) -> Any | None:
        """The validated settings object, or None with the errors shown in place.

        A field typed as a list of values holds its first value in the object;
        every other value is checked in its place too.
        """
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        varied: dict[str, list[Any]] = {}
        for field in self._fields:
            text = self.query_one(f"#field-{field.name}", Input).value
            try:
                hint = self._hints[field.name]
                listed = None
                if self._value_lists is not None and _field_kind(hint)[0] is not list:  # a list's items: no sweep
                    listed = self._value_lists(field.name, text)
                if listed is not None:
                    varied[field.name] = listed
                    values[field.name] = listed[0]
                else:
                    values[field.name] = parse_value(text, hint)
            except FieldParseError as exc:
                errors[field.name] = str(exc)
            except SettingsError as exc:
                errors[field.name] = exc.reason
        settings = None
        if not errors:
            try:
                settings = self.settings_type(**values)
                settings.validate()
                for name, listed in varied.items():
                    for value in listed[1:]:
                        dataclasses.replace(settings, **{name: value}).validate()
            except SettingsError as exc:
                errors[exc.field] = exc.reason
                settings = None
        self.varied = varied
        self._show_errors(errors)
        if self._value_lists is not None:
            self.post_message(self.Checked())
        return settings

    def _show_errors(self, errors: dict[str, str]) -> None:
        """Show each field's error under it; only rows whose error changed are touched.

        This runs on every keystroke (and once per input as the form mounts):
        redrawing all 34 rows each time would be most of the form's cost.
        """
        self.errors = errors
        shown = {field.name: (errors.get(field.name, ""), field.name in errors) for field in self._fields}
        stray = [f"{name}: {message}" for name, message in errors.items() if name not in self._hints]
        if stray:
            # validate() named something that is not one field (a rule across
            # fields, say): show it on the first row so it is never lost.
            first = self._fields[0].name
            shown[first] = ("; ".join(stray), shown[first][1])
        for name, (message, invalid) in shown.items():
            if self._shown_errors.get(name, ("", False)) == (message, invalid):
                continue
            error = self.query_one(f"#error-{name}", Static)
            error.update(message)
            error.set_class(bool(message), "-visible")
            self.query_one(f"#row-{name}").set_class(invalid, "-invalid")
            if message:
                self._unfold(name)
        self._shown_errors = shown

    @on(Input.Changed, ".form-input")
    def _revalidate(self, event: Input.Changed) -> None:
        event.stop()
        self.settings()
