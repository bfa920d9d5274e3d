"""MkDocs hook: the API reference page, rendered from the OpenAPI schema at build time.

``make docs`` writes ``docs/api/openapi.yaml`` with ``manage.py spectacular``;
this turns it into Markdown (every path, its parameters, request body and
answers) where ``api/reference.md`` says ``<!-- openapi -->``. No script or
stylesheet from elsewhere: the page is plain HTML like the others.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

MARKER = "<!-- openapi -->"
METHODS = ("get", "post", "put", "patch", "delete")


def on_page_markdown(markdown: str, page: Any, config: Any, files: Any) -> str:
    if MARKER not in markdown:
        return markdown
    schema_path = Path(config["docs_dir"]) / "api" / "openapi.yaml"
    schema = yaml.safe_load(schema_path.read_text())
    return markdown.replace(MARKER, render(schema))


def render(schema: dict[str, Any]) -> str:
    parts = []
    for path, item in schema.get("paths", {}).items():
        for method in METHODS:
            operation = item.get(method)
            if operation is not None:
                parts.append(_operation(schema, path, method, operation))
    return "\n".join(parts)


def _operation(schema: dict[str, Any], path: str, method: str, operation: dict[str, Any]) -> str:
    lines = [f"## `{method.upper()} {path}`", ""]
    if operation.get("summary"):
        lines += [operation["summary"] + ".", ""]
    if operation.get("description"):
        lines += [operation["description"], ""]
    parameters = operation.get("parameters", [])
    if parameters:
        lines += ["| parameter | in | type | |", "|---|---|---|---|"]
        for parameter in parameters:
            kind = _type(schema, parameter.get("schema", {}))
            text = _cell(parameter.get("description", ""))
            lines.append(f"| `{parameter['name']}` | {parameter['in']} | {kind} | {text} |")
        lines.append("")
    body = operation.get("requestBody", {}).get("content", {})
    for media, content in body.items():
        lines += [f"Request body (`{media}`): {_type(schema, content.get('schema', {}))}", ""]
        break
    lines += ["| status | answer |", "|---|---|"]
    for status, response in operation.get("responses", {}).items():
        kinds = [
            f"{_type(schema, content.get('schema', {}))} (`{media}`)"
            for media, content in response.get("content", {}).items()
        ]
        answer = "; ".join(kinds) or "no body"
        lines.append(f"| {status} | {_cell(response.get('description', ''))} {answer} |")
    return "\n".join(lines) + "\n"


def _type(schema: dict[str, Any], node: dict[str, Any]) -> str:
    if "$ref" in node:
        name = node["$ref"].rsplit("/", 1)[-1]
        fields = schema["components"]["schemas"].get(name, {}).get("properties", {})
        listed = ", ".join(f"`{field}`" for field in fields)
        return f"**{name}**" + (f" ({listed})" if listed else "")
    if node.get("type") == "array":
        return f"array of {_type(schema, node.get('items', {}))}"
    if "enum" in node:
        return " \\| ".join(f"`{value}`" for value in node["enum"])
    return f"`{node.get('type', 'object')}`"


def _cell(text: str) -> str:
    return " ".join(text.split()).replace("|", "\\|")
