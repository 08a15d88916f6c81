"""Jinja2 rendering: templates of configs/specs, and expressions in catalog step params.

- ``StrictUndefined``: a missing variable is an error, never an empty string.
- Sandboxed environment: catalog files and templates may come from users.
- Errors name the template and the line (:class:`~infra_automation.exceptions.RenderError`).
- Output normalized: LF line endings, exactly one trailing newline.

The package's own default templates (docs pages, the VM spec) are package data under
``infra_automation/templates``, found through :mod:`importlib.resources`
(:func:`package_templates`): a project root's ``templates/`` overrides them.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.resources
from collections.abc import Iterable, Mapping
from functools import cache, lru_cache
from pathlib import Path
from typing import Any

import jinja2
from jinja2.nativetypes import NativeEnvironment, NativeTemplate
from jinja2.sandbox import ImmutableSandboxedEnvironment

from infra_automation.exceptions import RenderError


def _typed_concat(values: Iterable[Any]) -> Any:
    """One expression keeps its own type (a list stays a list, "8.10" stays a string: no
    ``literal_eval`` as in Jinja's native mode); several parts join into a string. An
    undefined value is an error here too, as StrictUndefined promises."""
    parts = list(values)
    for part in parts:
        if isinstance(part, jinja2.Undefined):
            part._fail_with_undefined_error()
    if len(parts) == 1:
        return parts[0]
    return "".join(str(p) for p in parts)


class _NativeSandbox(ImmutableSandboxedEnvironment, NativeEnvironment):
    """Sandboxed, and a template that is one expression keeps the expression's type."""

    concat = staticmethod(_typed_concat)


class _TypedTemplate(NativeTemplate):
    environment_class = _NativeSandbox


@cache
def package_templates() -> Path:
    """The directory of the package's default templates (``docs/``, ``vmware/``).

    A real directory on disk, also when the package is imported from a zip (then extracted
    once, and removed when the process exits).
    """
    stack = contextlib.ExitStack()
    atexit.register(stack.close)
    resource = importlib.resources.files("infra_automation") / "templates"
    return stack.enter_context(importlib.resources.as_file(resource))


@lru_cache(maxsize=16)
def template_env(root: str) -> jinja2.Environment:
    env = ImmutableSandboxedEnvironment(
        loader=jinja2.FileSystemLoader(root),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    return env


def render_template(root: str | Path, name: str, variables: Mapping[str, Any]) -> str:
    """Render ``name`` (relative to ``root``, e.g. ``network/cisco_ios/gateway.j2``)."""
    env = template_env(str(Path(root).resolve()))
    try:
        text = env.get_template(name).render(**variables)
    except jinja2.TemplateSyntaxError as exc:
        raise RenderError(exc.name or name, exc.lineno, exc.message or str(exc)) from exc
    except jinja2.TemplateNotFound as exc:
        raise RenderError(name, None, f"template not found under {root}") from exc
    except (jinja2.UndefinedError, jinja2.exceptions.SecurityError, TypeError, ValueError) as exc:
        raise RenderError(name, _template_line(exc, name), str(exc)) from exc
    return normalize(text)


def normalize(text: str) -> str:
    text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text.rstrip("\n") + "\n" if text.strip() else ""


def _template_line(exc: BaseException, name: str) -> int | None:
    tb = exc.__traceback__
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename.endswith(name):
            line = tb.tb_lineno
        elif tb.tb_frame.f_globals.get("__jinja_template__") is not None:
            line = tb.tb_frame.f_globals["__jinja_template__"].get_corresponding_lineno(
                tb.tb_lineno
            )
        tb = tb.tb_next
    return line


_NATIVE = _NativeSandbox(undefined=jinja2.StrictUndefined)
_NATIVE.template_class = _TypedTemplate


def render_value(value: Any, variables: Mapping[str, Any], where: str = "params") -> Any:
    """Render Jinja inside a (nested) parameter value.

    A string that is exactly one ``{{ expression }}`` keeps the expression's native type
    (a list stays a list); other strings render to text. Mappings and lists recurse.
    """
    if isinstance(value, str):
        if "{{" not in value and "{%" not in value:
            return value
        try:
            return _NATIVE.from_string(value).render(**variables)
        except jinja2.TemplateError as exc:
            raise RenderError(where, getattr(exc, "lineno", None), str(exc)) from exc
        except Exception as exc:
            raise RenderError(where, None, f"{type(exc).__name__}: {exc}") from exc
    if isinstance(value, Mapping):
        return {k: render_value(v, variables, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [render_value(v, variables, f"{where}[{i}]") for i, v in enumerate(value)]
    return value
