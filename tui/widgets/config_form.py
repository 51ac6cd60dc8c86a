"""A form over a settings dataclass, validated in place as the user types.

Generation settings and the training configuration are dataclasses whose
``validate()`` raises ``SettingsError(field, message)``. This form shows one
input per dataclass field and, after every keystroke, parses the text, builds
the dataclass and asks it to validate itself; the message appears right under
the offending field. The rules live in the engine; the form only shows them.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from pathlib import Path
from typing import Any

from textual import on
from textual.app import ComposeResult
from textual.containers import Horizontal, VerticalScroll
from textual.widgets import Input, Label, Static

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
    if origin is tuple:
        return tuple, False
    return annotation, False


def format_value(value: Any) -> str:
    """The text an input shows for a field value (the inverse of parse_value)."""
    if value is None:
        return ""
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
    return text


class ConfigForm(VerticalScroll):
    """One labelled input per field of a settings dataclass, with errors shown in place.

    ``settings()`` returns the validated dataclass, or None while any field is
    wrong (the reason is then visible under that field). It runs after every
    keystroke, so errors appear and clear as the user types.
    """

    DEFAULT_CSS = (Path(__file__).with_suffix(".tcss")).read_text(encoding="utf-8")

    def __init__(
        self,
        settings_type: type,
        values: dict[str, Any] | None = None,
        *,
        id: str | None = None,  # noqa: A002 - Textual's name for it
    ) -> None:
        super().__init__(id=id)
        self.settings_type = settings_type
        self._hints = typing.get_type_hints(settings_type)
        self._fields = dataclasses.fields(settings_type)
        self._initial = {name: value for name, value in (values or {}).items() if name in self._hints}
        self.errors: dict[str, str] = {}
        """What is wrong, by field name, as shown under each input."""

    def compose(self) -> ComposeResult:
        for field in self._fields:
            value = self._initial.get(field.name, self._default(field))
            with Horizontal(classes="form-row", id=f"row-{field.name}"):
                yield Label(field.name.replace("_", " "), classes="form-label")
                field_input = Input(format_value(value), id=f"field-{field.name}", classes="form-input", compact=True)
                # A steady cursor: blinking repaints twice a second, GIL time a
                # training thread in this process would rather have.
                field_input.cursor_blink = False
                yield field_input
            yield Static("", id=f"error-{field.name}", classes="form-error")

    @staticmethod
    def _default(field: dataclasses.Field) -> Any:
        if field.default is not dataclasses.MISSING:
            return field.default
        if field.default_factory is not dataclasses.MISSING:  # type: ignore[misc]
            return field.default_factory()  # type: ignore[misc]
        return ""

    def on_mount(self) -> None:
        self.settings()

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

        Keys that are not fields (say, from a run recorded by an older version) are ignored.
        """
        composed = bool(self.query(".form-input"))
        for name, value in values.items():
            if name not in self._hints:
                continue
            if composed:
                self.query_one(f"#field-{name}", Input).value = format_value(value)
            else:
                self._initial[name] = value  # shown when the inputs are composed
        if composed:
            self.settings()

    def set_value(self, name: str, value: Any) -> None:
        """Set one field's input (e.g. the model chosen on the Models screen)."""
        self.set_values({name: value})

    def settings(self) -> Any | None:
        """The validated settings object, or None with the errors shown in place."""
        errors: dict[str, str] = {}
        values: dict[str, Any] = {}
        for field in self._fields:
            text = self.query_one(f"#field-{field.name}", Input).value
            try:
                values[field.name] = parse_value(text, self._hints[field.name])
            except FieldParseError as exc:
                errors[field.name] = str(exc)
        settings = None
        if not errors:
            try:
                settings = self.settings_type(**values)
                settings.validate()
            except SettingsError as exc:
                errors[exc.field] = exc.reason
                settings = None
        self._show_errors(errors)
        return settings

    def _show_errors(self, errors: dict[str, str]) -> None:
        self.errors = errors
        for field in self._fields:
            message = errors.get(field.name, "")
            error = self.query_one(f"#error-{field.name}", Static)
            error.update(message)
            error.set_class(bool(message), "-visible")
            self.query_one(f"#row-{field.name}").set_class(bool(message), "-invalid")
        stray = [f"{name}: {message}" for name, message in errors.items() if name not in self._hints]
        if stray:
            # validate() named something that is not one field (a rule across
            # fields, say): show it on the first row so it is never lost.
            first = self._fields[0].name
            error = self.query_one(f"#error-{first}", Static)
            error.update("; ".join(stray))
            error.set_class(True, "-visible")

    @on(Input.Changed, ".form-input")
    def _revalidate(self, event: Input.Changed) -> None:
        event.stop()
        self.settings()

