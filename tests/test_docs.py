"""Every document or test file that the README, docs/ or the code refers to exists.

References are ``*.md`` names and ``tests/*.py`` / ``docs/...`` paths; each must exist
relative to the repository root or to the referencing file's folder. Files the project
writes at run time (not documents) are listed in GENERATED.
"""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("flexcore", "scenarios", "agents", "simulators", "bench", "tests")
#: names of files flexcosim writes (run folders), mentioned but not shipped
GENERATED = {"report.md"}  # flexcosim evaluate's report
REFERENCE = re.compile(r"(?<![\w/.-])((?:\.\./|[\w-]+/)*[\w.-]*\w\.md|tests/\w+\.py"
                       r"|docs/[\w.-]*\w(?:/[\w.-]*\w)*)(?![\w/-])")


def sources() -> list[Path]:
    files = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
    for pkg in PACKAGES:
        files += sorted(p for p in (ROOT / pkg).rglob("*.py") if "__pycache__" not in p.parts)
    return files


def references(path: Path) -> list[tuple[int, str]]:
    return [(n, m.group(1)) for n, line in enumerate(path.read_text().splitlines(), 1)
            for m in REFERENCE.finditer(line)]


def _inside(path: Path) -> bool:
    """An existing file or folder inside the repository (``../shared/X.md`` is not)."""
    path = path.resolve()
    return path.exists() and path.is_relative_to(ROOT)


def test_the_scan_finds_references():
    found = {ref for path in sources() for _, ref in references(path)}
    assert {"docs/method.md", "docs/stack.md", "tests/test_pipeline.py"} <= found
    assert REFERENCE.findall("cf. METHOD.md, ../shared/STACK.md and docs/x.md.") == [
        "METHOD.md", "../shared/STACK.md", "docs/x.md"]


def test_every_referenced_document_exists():
    missing = []
    for path in sources():
        if path == Path(__file__).resolve():
            continue  # this file names examples of bad references
        for line, ref in references(path):
            if Path(ref).name in GENERATED:
                continue
            if not any(_inside(base / ref) for base in (ROOT, path.parent)):
                missing.append(f"{path.relative_to(ROOT)}:{line}: {ref}")
    assert not missing, "references to files that do not exist:\n" + "\n".join(missing)
