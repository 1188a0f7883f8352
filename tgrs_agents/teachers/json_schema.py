"""``kind = "json_schema"``: the final assistant message is JSON that validates against a schema.

The schema is given inline (``schema = {...}``) or as a file (``schema_file``, relative to the panel
file). A fenced block (```json ... ```) around the JSON is accepted unless ``strip_fences = false``.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import Field, model_validator

from ..errors import ConfigError
from ..types import Candidate, Verdict
from .base import BuildContext, Teacher, TeacherConfig

_FENCE = re.compile(r"^\s*```[A-Za-z0-9_-]*\s*\n(.*?)\n?```\s*$", re.DOTALL)


class JsonSchemaConfig(TeacherConfig):
    kind: Literal["json_schema"] = "json_schema"
    json_schema: dict[str, Any] | None = Field(default=None, alias="schema")
    schema_file: str | None = None
    strip_fences: bool = True

    @model_validator(mode="after")
    def _one_schema(self) -> JsonSchemaConfig:
        if (self.json_schema is None) == (self.schema_file is None):
            raise ValueError("expected exactly one of 'schema' (a table) or 'schema_file' (a path)")
        return self


class JsonSchemaTeacher(Teacher):
    Config = JsonSchemaConfig
    inline: ClassVar[bool] = True
    config: JsonSchemaConfig

    def __init__(self, config: JsonSchemaConfig, ctx: BuildContext | None = None) -> None:
        super().__init__(config, ctx)
        import jsonschema

        schema = config.json_schema
        if schema is None:
            assert config.schema_file is not None
            path = Path(config.schema_file)
            if not path.is_absolute():
                path = self.ctx.base_dir / path
            try:
                schema = json.loads(path.read_text())
            except (OSError, ValueError) as e:
                raise ConfigError(
                    f"expected a readable JSON schema file: {e}",
                    file=self.ctx.source,
                    field=f"teacher.{config.name}.schema_file",
                ) from None
        cls = jsonschema.validators.validator_for(schema)
        try:
            cls.check_schema(schema)
        except jsonschema.SchemaError as e:
            raise ConfigError(
                f"expected a valid JSON schema: {e.message}",
                file=self.ctx.source,
                field=f"teacher.{config.name}.schema",
            ) from None
        self._validator = cls(schema)
        self._schema = json.dumps(schema, sort_keys=True)  # a schema_file's content is in no config field

    def memo_content(self, candidate: Candidate) -> tuple[str, str]:
        """The schema and the text it parses, for the panel's memo (tgrs_agents.curation.memo)."""
        return self._schema, candidate.final_text

    async def judge(self, candidate: Candidate) -> Verdict:
        text = candidate.final_text
        if self.config.strip_fences:
            m = _FENCE.match(text)
            if m:
                text = m.group(1)
        try:
            value = json.loads(text)
        except ValueError as e:
            return self.verdict(False, rationale=f"final message is not JSON: {e}")
        err = next(iter(self._validator.iter_errors(value)), None)
        if err is not None:
            where = "/".join(str(p) for p in err.absolute_path) or "(root)"
            return self.verdict(False, rationale=f"schema violation at {where}: {err.message[:200]}")
        return self.verdict(True, rationale="valid against the schema")
