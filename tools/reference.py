"""The reference pages of the documentation, made from the code at every build.

- reference/settings.md: every field of campaign_grpc.settings.Settings (flag, environment
  variable, default, help);
- reference/errors.md: every reason of campaign_grpc.domain.reasons (code, meaning);
- reference/rpcs.md: every service, method and message of protos/, with their comments, from
  a descriptor set compiled here (so it does not depend on the generated stubs).

mkdocs.yml names this file as a hook: its on_files adds the pages to the site, never to docs/.
`python tools/reference.py [settings|errors|rpcs]` prints one page.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import fields
from importlib import resources
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
PROTOS = ROOT / "protos"

sys.path.insert(0, str(ROOT / "src"))

from google.protobuf import descriptor_pb2  # noqa: E402

from campaign_grpc.domain.reasons import ERROR_REASONS  # noqa: E402
from campaign_grpc.settings import Settings, env_name, shown  # noqa: E402


def _text(text: str) -> str:
    """Plain text as Markdown: angle brackets outside code spans are not HTML."""
    parts = text.split("`")
    parts[::2] = [p.replace("<", "&lt;").replace(">", "&gt;") for p in parts[::2]]
    return "`".join(parts)


def _cell(text: str) -> str:
    return _text(" ".join(text.split())).replace("|", "\\|")


def settings_page() -> str:
    lines = [
        "# Settings",
        "",
        "Every setting of `campaign-grpc serve` is a flag and an environment variable; the flag",
        "wins. A switch (default on or off) takes `on` or `off`; the flag alone turns it on, and",
        "`--no-NAME` turns off one that is on by default. `campaign-grpc serve --help` prints",
        "the same list.",
        "",
        "| flag | environment variable | default | what it sets |",
        "| --- | --- | --- | --- |",
    ]
    for f in fields(Settings):
        flag = "--" + f.name.replace("_", "-")
        lines.append(
            f"| `{flag}` | `{env_name(f.name)}` | `{shown(f.default)}` "
            f"| {_cell(f.metadata['help'])} |"
        )
    return "\n".join(lines) + "\n"


def errors_page() -> str:
    lines = [
        "# Error reasons",
        "",
        "Every non-OK status the server sends carries a `google.rpc.Status` in the",
        "`grpc-status-details-bin` trailer with a `google.rpc.ErrorInfo` (domain",
        "`campaign-grpc`) whose reason is one of these; `INVALID_ARGUMENT` adds a `BadRequest`,",
        "`FAILED_PRECONDITION` a `PreconditionFailure`, and a limit a `QuotaFailure` with",
        "metadata `limit`. A status made by a gRPC library or the transport (the server out of",
        "reach, the client's own deadline or cancellation) carries no details: code that reads",
        "the reason must allow for its absence.",
        "",
        "| reason | code | what it means, what to do |",
        "| --- | --- | --- |",
    ]
    for r in ERROR_REASONS:
        lines.append(f"| `{r.reason}` | `{r.code}` | {_cell(r.meaning)} |")
    return "\n".join(lines) + "\n"


def descriptor_set() -> descriptor_pb2.FileDescriptorSet:
    """protos/ compiled with their comments (source info) by grpc_tools' protoc."""
    from grpc_tools import protoc

    include = resources.files("grpc_tools") / "_proto"
    sources = sorted(str(p.relative_to(PROTOS)) for p in PROTOS.rglob("*.proto"))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "protos.binpb"
        status = protoc.main(
            [
                "protoc",
                f"-I{PROTOS}",
                f"-I{include}",
                "--include_source_info",
                f"--descriptor_set_out={out}",
                *sources,
            ]
        )
        if status != 0:
            raise RuntimeError(f"protoc failed on {PROTOS} ({status})")
        return descriptor_pb2.FileDescriptorSet.FromString(out.read_bytes())


def _comments(file: descriptor_pb2.FileDescriptorProto) -> dict[tuple[int, ...], str]:
    return {
        tuple(loc.path): loc.leading_comments.strip()
        for loc in file.source_code_info.location
        if loc.leading_comments.strip()
    }


def _paragraphs(comment: str) -> list[str]:
    """A proto comment as Markdown: its lines dedented, as paragraphs."""
    if not comment:
        return []
    text = "\n".join(line.removeprefix(" ") for line in comment.splitlines())
    return [_text(text), ""]


# Field numbers of descriptor.proto, the path elements of source info.
_MESSAGE, _ENUM, _SERVICE = 4, 5, 6
_FIELD, _NESTED, _NESTED_ENUM, _METHOD, _VALUE = 2, 3, 4, 2, 2
_LABELS = {descriptor_pb2.FieldDescriptorProto.LABEL_REPEATED: "repeated "}


def _type_name(f: descriptor_pb2.FieldDescriptorProto) -> str:
    if f.type_name:
        return f.type_name.lstrip(".")
    name = descriptor_pb2.FieldDescriptorProto.Type.Name(f.type)
    return str(name).removeprefix("TYPE_").lower()


def _anchor(full_name: str) -> str:
    return full_name.replace(".", "").lower()


def _link(full_name: str, package: str) -> str:
    if full_name.startswith(package + "."):
        return f"[`{full_name}`](#{_anchor(full_name)})"
    return f"`{full_name}`"


def _message(
    m: descriptor_pb2.DescriptorProto,
    prefix: str,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
    package: str,
) -> Iterator[str]:
    name = f"{prefix}.{m.name}"
    if m.options.map_entry:
        return
    yield f"### {name}"
    yield ""
    yield from _paragraphs(comments.get(path, ""))
    if m.field:
        yield "| field | type | number | description |"
        yield "| --- | --- | --- | --- |"
        for i, f in enumerate(m.field):
            kind = _LABELS.get(f.label, "") + _link(_type_name(f), package)
            about = _cell(comments.get((*path, _FIELD, i), ""))
            yield f"| `{f.name}` | {kind} | {f.number} | {about} |"
        yield ""
    for i, nested in enumerate(m.nested_type):
        yield from _message(nested, name, (*path, _NESTED, i), comments, package)
    for i, e in enumerate(m.enum_type):
        yield from _enum(e, name, (*path, _NESTED_ENUM, i), comments)


def _enum(
    e: descriptor_pb2.EnumDescriptorProto,
    prefix: str,
    path: tuple[int, ...],
    comments: dict[tuple[int, ...], str],
) -> Iterator[str]:
    yield f"### {prefix}.{e.name}"
    yield ""
    yield from _paragraphs(comments.get(path, ""))
    yield "| value | number | description |"
    yield "| --- | --- | --- |"
    for i, v in enumerate(e.value):
        yield f"| `{v.name}` | {v.number} | {_cell(comments.get((*path, _VALUE, i), ''))} |"
    yield ""


def rpcs_page(files: descriptor_pb2.FileDescriptorSet | None = None) -> str:
    files = files or descriptor_set()
    ours = [f for f in files.file if not f.name.startswith("google/")]
    lines = [
        "# RPCs and messages",
        "",
        "Made from the contract in `protos/` at every build: each method with its request,",
        "its response and its documentation, then every message and enum.",
        "",
    ]
    for file in ours:
        comments = _comments(file)
        for s_index, service in enumerate(file.service):
            path: tuple[int, ...] = (_SERVICE, s_index)
            lines += [f"## {file.package}.{service.name}", "", *_paragraphs(comments.get(path, ""))]
            for m_index, m in enumerate(service.method):
                request = ("stream " if m.client_streaming else "") + _link(
                    m.input_type.lstrip("."), file.package
                )
                response = ("stream " if m.server_streaming else "") + _link(
                    m.output_type.lstrip("."), file.package
                )
                lines += [
                    f"### {m.name}",
                    "",
                    f"`rpc {m.name}` ({request}) returns ({response})",
                    "",
                    *_paragraphs(comments.get((*path, _METHOD, m_index), "")),
                ]
    for file in ours:
        if not (file.message_type or file.enum_type):
            continue
        comments = _comments(file)
        lines += [f"## Messages of {file.name}", ""]
        for i, message in enumerate(file.message_type):
            lines += _message(message, file.package, (_MESSAGE, i), comments, file.package)
        for i, enum in enumerate(file.enum_type):
            lines += _enum(enum, file.package, (_ENUM, i), comments)
    return "\n".join(lines).rstrip() + "\n"


PAGES: dict[str, Callable[[], str]] = {
    "reference/settings.md": settings_page,
    "reference/errors.md": errors_page,
    "reference/rpcs.md": rpcs_page,
}


def on_files(files: Any, config: Any) -> Any:
    """mkdocs hook: the reference pages, made now, join the site's files."""
    from mkdocs.structure.files import File

    for uri, page in PAGES.items():
        files.append(File.generated(config, uri, content=page()))
    return files


def main(argv: list[str]) -> int:
    names = argv or ["settings", "errors", "rpcs"]
    for name in names:
        sys.stdout.write(PAGES[f"reference/{name}.md"]())
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
