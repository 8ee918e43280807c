"""Validating a node's ``params:`` with its worker's own :class:`~beampipe.Params` model."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from beampipe.config.pydantic_errors import simplify
from beampipe.config.schema import dotted, pydantic_message
from beampipe.worker.base import Node, Params
from beampipe.worker.registry import resolve


@dataclass(frozen=True)
class ParamProblem:
    """One thing wrong with a node's params: ``path`` of the param (``()`` for all of them)."""

    path: tuple[Any, ...]
    problem: str


def validate_params(
    cls: type[Node], use: str, params: dict[str, Any], base_dir: Path
) -> tuple[Params | None, list[ParamProblem]]:
    """``(cls.Params instance, [])`` if ``params`` are valid, else ``(None, problems)``.

    ``base_dir`` (the pipeline file's folder) resolves relative :data:`~beampipe.InputPath` s.

    Problems name the param: ``param 'every': Input should be a valid integer, got 'ten'``.
    """
    model = cls.Params
    try:
        return model.model_validate(params, context={"base_dir": str(base_dir)}), []
    except ValidationError as exc:
        return None, [_describe(err, model, use) for err in simplify(exc.errors(), params)]
    except Exception as exc:  # a validator of the worker's raised something unusual
        return None, [ParamProblem((), f"params rejected: {type(exc).__name__}: {exc}")]


def param_names(use: Any) -> list[str]:
    """The params of node type ``use``; none if it cannot be resolved."""
    if not isinstance(use, str):
        return []
    try:
        return list(resolve(use).Params.model_fields)
    except Exception:  # reported where the node's class is checked
        return []


def _describe(err: ErrorDetails, model: type[BaseModel], use: str) -> ParamProblem:
    loc = tuple(err["loc"])
    name = dotted(loc)
    if not loc:
        return ParamProblem(loc, f"params: {pydantic_message(err)}")
    if err["type"] == "extra_forbidden":
        known = list(model.model_fields) if len(loc) == 1 else []
        if len(loc) > 1:
            return ParamProblem(loc, f"unknown param {name!r}")
        if not known:
            return ParamProblem(loc, f"unknown param {name!r} ({use} takes no params)")
        hint = difflib.get_close_matches(str(loc[0]), known, n=1)
        suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
        listed = ", ".join(map(repr, known))
        return ParamProblem(loc, f"unknown param {name!r} (params of {use}: {listed}{suggestion})")
    if err["type"] == "missing":
        return ParamProblem(loc, f"missing required param {name!r}")
    return ParamProblem(loc, f"param {name!r}: {pydantic_message(err)}")
