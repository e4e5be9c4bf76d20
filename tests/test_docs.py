"""The docs stay true and usable: generated pages match the code, links resolve, the README
stays a front door, and the Indonesian technician's guide stays the English one's twin."""

from __future__ import annotations

import re
import shutil
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel, Field

from gateway.config import Config
from gateway.ops import docgen
from gateway.ops.cli import build_parser
from tests.conftest import ROOT

README = ROOT / "README.md"
DOCS = ROOT / "docs"
TECHNICIAN = DOCS / "technician.md"
TEKNISI = DOCS / "teknisi.md"
README_MAX_LINES = 300

_FENCE = re.compile(r"^(`{3,}|~{3,})(.*)$")
_LINK = re.compile(r"!?\[[^\]]*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
_HTML_ID = re.compile(r"<a id=\"([^\"]+)\"></a>")
# <something> as a stand-in the reader must replace: "<the repository>", "<you>", "<ip>".
_PLACEHOLDER = re.compile(r"<[A-Za-z][^<>\n]*>")
_SHELLS = {"sh", "bash", "shell", "console"}


def _markdown_files() -> list[Path]:
    return [README, *sorted(DOCS.rglob("*.md"))]


def _split(text: str) -> tuple[list[str], list[tuple[str, str]]]:
    """The lines outside code blocks, and the code blocks as (info string, content)."""
    prose: list[str] = []
    blocks: list[tuple[str, str]] = []
    fence: str | None = None
    info = ""
    body: list[str] = []
    for line in text.splitlines():
        match = _FENCE.match(line)
        if fence is None and match:
            fence, info, body = match.group(1), match.group(2).strip(), []
        elif fence is not None and line.strip() == fence:
            blocks.append((info, "\n".join(body)))
            fence = None
        elif fence is not None:
            body.append(line)
        else:
            prose.append(line)
    assert fence is None, "a code block is not closed"
    return prose, blocks


def _headings(text: str) -> list[tuple[int, str]]:
    prose, _ = _split(text)
    return [(len(m.group(1)), m.group(2).strip())
            for line in prose if (m := re.match(r"^(#{1,6})\s+(.*)$", line))]


def _slug(title: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    title = re.sub(r"[`*]|<[^>]*>", "", title.lower()).replace("\\", "")
    return re.sub(r"[^\w\- ]", "", title).replace(" ", "-")


def _anchors(path: Path) -> set[str]:
    text = path.read_text(encoding="utf-8")
    found: set[str] = set(_HTML_ID.findall(text))
    counts: dict[str, int] = {}
    for _, title in _headings(text):
        slug = _slug(title)
        n = counts.get(slug, 0)
        counts[slug] = n + 1
        found.add(slug if n == 0 else f"{slug}-{n}")
    return found


def _table_rows_per_section(text: str) -> list[list[int]]:
    """For each heading (and the text before the first), the body rows of each table in it."""
    prose, _ = _split(text)
    sections: list[list[int]] = [[]]
    in_table = False
    for line in prose:
        if re.match(r"^#{1,6}\s", line):
            sections.append([])
            in_table = False
        elif line.startswith("|"):
            if not in_table:
                sections[-1].append(-1)  # the header row; the separator row follows
                in_table = True
            sections[-1][-1] += 0 if re.match(r"^\|[\s:|-]+\|$", line) else 1
        else:
            in_table = False
    return sections


def test_generated_pages_match_the_code() -> None:
    stale = docgen.stale(ROOT)
    assert not stale, f"out of date: {', '.join(stale)}; run ./dev docs"


def test_docgen_check_names_the_pages_that_differ(tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    assert docgen.main(["--check", "--root", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    for rel in (docgen.CONFIG_MD, docgen.MAN_CLI, docgen.MAN_CONFIG):
        assert rel in err
    assert docgen.main(["--root", str(tmp_path)]) == 0
    assert docgen.main(["--check", "--root", str(tmp_path)]) == 0
    assert (tmp_path / docgen.CONFIG_MD).read_text() == (ROOT / docgen.CONFIG_MD).read_text()


def test_a_key_without_a_description_is_refused() -> None:
    class Inner(BaseModel):
        documented: int = Field(1, description="Says what it does")
        silent: int = 2

    class Outer(BaseModel):
        inner: tuple[Inner, ...] = Field((), description="A list of them")

    with pytest.raises(docgen.UndocumentedKey, match=r"inner\[\]\.silent"):
        docgen.config_tables(Outer)


def _model_keys(model: type[BaseModel], prefix: str) -> list[str]:
    """Every key path of the config models, found without the generator's help."""
    keys: list[str] = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        keys.append(path)
        stack: list[typing.Any] = [info.annotation]
        while stack:
            ann = stack.pop()
            args = typing.get_args(ann)
            if isinstance(ann, type) and issubclass(ann, BaseModel):
                is_list = typing.get_origin(info.annotation) is tuple
                keys += _model_keys(ann, f"{path}[]." if is_list else f"{path}.")
            stack += [a for a in args if a is not Ellipsis]
    return keys


def test_every_config_key_is_in_the_reference() -> None:
    reference = (ROOT / docgen.CONFIG_MD).read_text(encoding="utf-8")
    keys = _model_keys(Config, "")
    assert len(keys) > 100
    missing = [k for k in keys if f"| `{k}` |" not in reference]
    assert not missing, f"not in {docgen.CONFIG_MD}: {missing}"


def test_every_subcommand_is_in_the_man_page_and_the_cli_reference() -> None:
    man = (ROOT / docgen.MAN_CLI).read_text(encoding="utf-8")
    cli = (DOCS / "reference" / "cli.md").read_text(encoding="utf-8")
    parser = build_parser()
    subparsers = next(a for a in parser._actions if a.dest == "command")
    assert subparsers.choices is not None
    for name in subparsers.choices:
        roff_name = name.replace("-", "\\-")
        assert f'.SS "{roff_name}"' in man
        assert f"`{name}" in cli, f"docs/reference/cli.md does not show {name}"


def test_readme_is_a_front_door() -> None:
    lines = README.read_text(encoding="utf-8").splitlines()
    assert len(lines) <= README_MAX_LINES, f"README.md has {len(lines)} lines"
    text = "\n".join(lines)
    for command in ("./dev demo", "./dev test"):
        assert command in text
    for page in ("docs/technician.md", "docs/teknisi.md", "docs/operator.md",
                 "docs/architecture.md", "docs/benchmarks.md", "docs/reference/config.md"):
        assert f"({page}" in text, f"README.md does not link {page}"


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_resolve(page: Path) -> None:
    prose, _ = _split(page.read_text(encoding="utf-8"))
    broken: list[str] = []
    for line in prose:
        for target in _LINK.findall(re.sub(r"`[^`]*`", "", line)):
            if re.match(r"^[a-z][a-z0-9+.-]*:", target):
                continue  # http:, https:, mailto:
            file_part, _, anchor = target.partition("#")
            resolved = (page.parent / file_part).resolve() if file_part else page
            if not resolved.exists():
                broken.append(target)
            elif anchor and resolved.suffix == ".md" and anchor not in _anchors(resolved):
                broken.append(f"{target} (no such heading)")
    assert not broken, f"{page.relative_to(ROOT)}: broken links {broken}"


def test_the_indonesian_guide_has_the_english_ones_shape() -> None:
    english = TECHNICIAN.read_text(encoding="utf-8")
    indonesian = TEKNISI.read_text(encoding="utf-8")
    levels_en = [level for level, _ in _headings(english)]
    levels_id = [level for level, _ in _headings(indonesian)]
    assert levels_en == levels_id, "headings differ in level or count"
    blocks_en = _split(english)[1]
    blocks_id = _split(indonesian)[1]
    assert len(blocks_en) == len(blocks_id), "a different number of code blocks"
    for i, (en, id_) in enumerate(zip(blocks_en, blocks_id, strict=True)):
        assert en == id_, f"code block {i + 1} differs:\n{en[1]}\n---\n{id_[1]}"
    assert _table_rows_per_section(english) == _table_rows_per_section(indonesian)


def test_the_troubleshooting_table_is_in_both_guides() -> None:
    def rows(text: str, title: str) -> int:
        headings = [t for _, t in _headings(text)]
        assert title in headings, f"no heading {title!r}"
        index = headings.index(title) + 1
        return sum(_table_rows_per_section(text)[index])

    english = rows(TECHNICIAN.read_text(encoding="utf-8"), "Field troubleshooting")
    indonesian = rows(TEKNISI.read_text(encoding="utf-8"), "Pemecahan masalah di lapangan")
    assert english >= 10
    assert english == indonesian


@pytest.mark.parametrize("page", _markdown_files(), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_placeholder_in_a_shell_command(page: Path) -> None:
    _, blocks = _split(page.read_text(encoding="utf-8"))
    found = [m.group(0) for info, body in blocks if info.split()[:1] and
             info.split()[0] in _SHELLS for m in _PLACEHOLDER.finditer(body)]
    assert not found, f"{page.relative_to(ROOT)}: placeholders in commands: {found}"


def test_dev_docs_regenerates_the_pages() -> None:
    dev = (ROOT / "dev").read_text(encoding="utf-8")
    assert re.search(r"^\s*docs\)", dev, re.MULTILINE)
    assert "gateway.ops.docgen" in dev
