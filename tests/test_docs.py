"""The documents hold together: every relative link in README.md and docs/*.md resolves inside the repository (to a
file or folder, and to a heading where it names one), and every `--flag` they name exists on the command line it
belongs to. Cheap: it imports the scripts' flag dataclasses and reads text; nothing trains or compiles.

Which command line a flag belongs to:
- in a command (a line of a code block, or an inline code span) that runs `flowrl_jax.py`, `sac_jax.py` or
  `benchmarks/<name>.py`: that script's flags (`benchmarks/<name>.py`: the fields of its `Args`);
- in a command that runs pip or pytest: not checked (the install and test commands use those tools' own flags);
- in the first cell of a table row of docs/flags.md: the script(s) its section heading names (`flowrl_jax.py`,
  `sac_jax.py`), or both scripts where it names neither (the shared run flags);
- anywhere else: at least one of the project's command lines.
"""

import dataclasses
import functools
import importlib
import re
import shutil
import subprocess
from pathlib import Path

import pytest
from common.run.args import RunArgs

ROOT = Path(__file__).resolve().parents[1]
FLAG_TABLE_DOCS = {"docs/flags.md"}
SCRIPTS = ("flowrl_jax.py", "sac_jax.py")


def documents() -> list[Path]:
    return [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]


def doc_ids() -> list[str]:
    return [str(path.relative_to(ROOT)) for path in documents()]


# ---------------------------------------------------------------------------------------------------------------------
# Markdown: code fences, headings, anchors, links
# ---------------------------------------------------------------------------------------------------------------------
FENCE = re.compile(r"^\s*(```|~~~)")
INLINE_CODE = re.compile(r"(`+)(.+?)\1", re.DOTALL)
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\[\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+\"[^\"]*\")?\s*\)")


def split_blocks(text: str):
    """(kind, heading, lines): kind is `code` for a fenced block, `text` for a paragraph; heading is the text of
    the nearest heading above."""
    heading, blocks, paragraph, code = "", [], [], None
    for line in text.splitlines():
        if code is not None:
            if FENCE.match(line):
                blocks.append(("code", heading, code))
                code = None
            else:
                code.append(line)
            continue
        if FENCE.match(line):
            if paragraph:
                blocks.append(("text", heading, paragraph))
                paragraph = []
            code = []
        elif line.startswith("#"):
            if paragraph:
                blocks.append(("text", heading, paragraph))
                paragraph = []
            heading = line.lstrip("#").strip()
            blocks.append(("heading", heading, [heading]))
        elif not line.strip():
            if paragraph:
                blocks.append(("text", heading, paragraph))
                paragraph = []
        else:
            paragraph.append(line)
    if paragraph:
        blocks.append(("text", heading, paragraph))
    assert code is None, "unclosed code fence"
    return blocks


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: the rendered text, lower case, without punctuation, spaces as hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link's text
    text = text.replace("`", "").replace("*", "").strip().lower()
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(text: str) -> set[str]:
    seen, result = {}, set()
    for kind, heading, _ in split_blocks(text):
        if kind == "heading":
            base = slug(heading)
            count = seen.get(base, 0)
            seen[base] = count + 1
            result.add(base if count == 0 else f"{base}-{count}")
    return result


@functools.cache
def tracked_files() -> frozenset[str] | None:
    """The files a commit would hold (tracked, or new and not ignored), so that a link to an ignored file such as a
    run's output fails here as it would in a clone; None outside a git checkout."""
    if shutil.which("git") is None:
        return None
    result = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True)
    if result.returncode != 0:
        return None
    return frozenset(name for name in result.stdout.decode().split("\0") if name)


def link_errors(path: Path, text: str, root: Path = ROOT, tracked: frozenset[str] | None = None) -> list[str]:
    """Every relative link of `text` (the file at `path`) that does not resolve inside `root`."""
    errors = []
    for kind, _, lines in split_blocks(text):
        if kind != "text":
            continue
        prose = INLINE_CODE.sub("", "\n".join(lines))
        for target in LINK.findall(prose):
            if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
                continue
            file_part, _, anchor = target.partition("#")
            resolved = (path.parent / file_part).resolve() if file_part else path.resolve()
            try:
                relative = resolved.relative_to(root.resolve())
            except ValueError:
                errors.append(f"{target}: outside the repository")
                continue
            if not resolved.exists():
                errors.append(f"{target}: no such file")
                continue
            name = relative.as_posix()
            if tracked is not None and resolved.is_file() and name not in tracked:
                errors.append(f"{target}: not in git (a clone would not have it)")
                continue
            if tracked is not None and resolved.is_dir() and name != "." and not any(
                    f.startswith(name + "/") for f in tracked):
                errors.append(f"{target}: a folder that holds no file in git")
                continue
            if anchor:
                if resolved.suffix != ".md":
                    errors.append(f"{target}: an anchor into a file that is not Markdown")
                elif anchor not in anchors(resolved.read_text()):
                    errors.append(f"{target}: no heading with the anchor #{anchor} in {name}")
    return errors


@pytest.mark.parametrize("path", documents(), ids=doc_ids())
def test_every_relative_link_resolves_inside_the_repository(path):
    errors = link_errors(path, path.read_text(), tracked=tracked_files())
    assert not errors, "\n".join(errors)


# ---------------------------------------------------------------------------------------------------------------------
# Flags
# ---------------------------------------------------------------------------------------------------------------------
def flags_of(cls) -> set[str]:
    """tyro's flag names for a dataclass: --field-name, and --no-field-name for a bool; positional fields have none."""
    flags = {"--help"}
    for field in dataclasses.fields(cls):
        if "Positional" in repr(field.type):
            continue
        name = "--" + field.name.replace("_", "-")
        flags.add(name)
        if field.type in (bool, "bool"):
            flags.add("--no-" + name[2:])
    return flags


@functools.cache
def command_lines() -> dict[str, frozenset[str]]:
    """The flags of each of the project's command lines: the two algorithm scripts and every benchmarks/*.py that
    has an `Args` dataclass."""
    from common.run.cli import RunArgs
    from flowrl_jax import FlowRLConfig
    from sac_jax import SACConfig

    lines = {"flowrl_jax.py": frozenset(flags_of(RunArgs) | flags_of(FlowRLConfig)),
             "sac_jax.py": frozenset(flags_of(RunArgs) | flags_of(SACConfig))}
    for script in sorted((ROOT / "benchmarks").glob("*.py")):
        module = importlib.import_module(f"benchmarks.{script.stem}")
        args = getattr(module, "Args", None)
        if dataclasses.is_dataclass(args):
            lines[f"benchmarks/{script.name}"] = frozenset(flags_of(args))
    return lines


FLAG = re.compile(r"(?<![\w-])--[A-Za-z0-9][\w-]*")
EXTERNAL = re.compile(r"(^|[\s/])(pip3?|pytest|#SBATCH)(\s|$)")
ENV_ASSIGNMENTS = re.compile(r"^\s*(\w+=\S*(\s+|$))+")  # `XLA_FLAGS=--xla_… python …`: the value is no flag of ours


def command_flag_errors(command: str, lines: dict[str, frozenset[str]]) -> list[str]:
    """The flags of one command that its command line lacks (a line of a code block or an inline code span; `&&`,
    `;` and `|` separate commands)."""
    errors = []
    command, _, comment = command.partition(" #")
    for part in re.split(r"&&|;|\|", command):
        if EXTERNAL.search(part):
            continue
        part = ENV_ASSIGNMENTS.sub("", part)
        match = re.search(r"(?:^|[\s/])((?:benchmarks/)?[\w.-]+\.py)\b", part)
        script = match and match.group(1)
        scripts = [script] if script in lines else None
        if script and script.startswith("benchmarks/") and script not in lines and FLAG.search(part):
            errors.append(f"{part.strip()!r}: {script} has no Args dataclass to check its flags against")
            continue
        for flag in FLAG.findall(part):
            candidates = scripts or list(lines)
            if not any(flag in lines[s] for s in candidates):
                errors.append(f"{flag} in {part.strip()!r}: not a flag of {' or '.join(scripts or ['any script'])}")
    for flag in FLAG.findall(comment):
        if not any(flag in lines[s] for s in lines):
            errors.append(f"{flag} in comment {comment.strip()!r}: not a flag of any script")
    return errors


def flag_errors(name: str, text: str, lines: dict[str, frozenset[str]]) -> list[str]:
    errors = []
    for kind, heading, block in split_blocks(text):
        if kind == "code":
            joined = "\n".join(block).replace("\\\n", " ")  # shell line continuations
            for line in joined.splitlines():
                errors += command_flag_errors(line, lines)
            continue
        body = "\n".join(block)
        spans = [m.group(2) for m in INLINE_CODE.finditer(body)]
        for span in spans:
            errors += command_flag_errors(span.replace("\n", " "), lines)
        for flag in FLAG.findall(INLINE_CODE.sub(" ", body)):  # outside code spans
            if not any(flag in lines[s] for s in lines):
                errors.append(f"{flag}: not a flag of any script")
        if kind == "text" and name in FLAG_TABLE_DOCS:
            owners = [s for s in SCRIPTS if s in heading] or list(SCRIPTS)
            for row in block:
                cells = row.strip().strip("|").split("|")
                if not row.lstrip().startswith("|") or not cells:
                    continue
                for flag in FLAG.findall(cells[0]):
                    missing = [s for s in owners if not flag in lines[s]]
                    if missing:
                        errors.append(f"{flag} documented under {heading!r}: not a flag of {', '.join(missing)}")
    return errors


@pytest.mark.parametrize("path", documents(), ids=doc_ids())
def test_every_named_flag_exists_on_its_command_line(path):
    name = str(path.relative_to(ROOT))
    errors = flag_errors(name, path.read_text(), command_lines())
    assert not errors, "\n".join(errors)


def test_the_flags_reference_names_every_flag_of_both_scripts():
    text = (ROOT / "docs" / "flags.md").read_text()
    lines = command_lines()
    for script in SCRIPTS:
        documented = set(FLAG.findall(text))
        missing = sorted(flag for flag in lines[script] - {"--help"} if flag not in documented
                         and not flag.startswith("--no-"))
        assert not missing, f"{script}: flags missing from docs/flags.md: {', '.join(missing)}"


def test_sac_has_the_documented_hidden_dim_flag():
    assert "--hidden-dim" in command_lines()["sac_jax.py"]


# ---------------------------------------------------------------------------------------------------------------------
# The checks themselves catch what they are for
# ---------------------------------------------------------------------------------------------------------------------
def test_the_checks_catch_a_broken_link_and_an_unknown_flag(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.md").write_text("# A heading\n")
    doc = tmp_path / "README.md"
    text = ("# Title\n\n[ok](docs/a.md#a-heading) [self](#title) [web](https://example.org/x)\n"
            "[gone](docs/missing.md) [bad anchor](docs/a.md#nowhere) [out](../shared/ANCHORS.md)\n\n"
            "`[not a link](nowhere.md)`\n")
    doc.write_text(text)
    assert sorted(link_errors(doc, text, root=tmp_path)) == [
        "../shared/ANCHORS.md: outside the repository",
        "docs/a.md#nowhere: no heading with the anchor #nowhere in docs/a.md",
        "docs/missing.md: no such file"]

    lines = {"flowrl_jax.py": frozenset({"--env", "--lagrange", "--help"}),
             "sac_jax.py": frozenset({"--env", "--tau", "--help"}),
             "benchmarks/plot.py": frozenset({"--suite", "--help"})}
    good = ("Use `--tau 0.01` or `python flowrl_jax.py --env x --lagrange 1`.\n\n"
            "```bash\npython3 -m venv .venv && .venv/bin/pip install -q -r r.txt && .venv/bin/python -m pytest -q "
            "-n 2 --dist loadfile tests\npython benchmarks/plot.py --suite cpu\n```\n")
    assert flag_errors("README.md", good, lines) == []
    assert flag_errors("README.md", "`python sac_jax.py --lagrange 1`\n", lines) != []  # FlowRL's flag, SAC's line
    assert flag_errors("README.md", "```\npython benchmarks/plot.py --tau 1\n```\n", lines) != []
    assert flag_errors("README.md", "`--no-such-flag`\n", lines) != []
    assert flag_errors("README.md", "```\npython benchmarks/nope.py --env x\n```\n", lines) != []
    table = "## Both\n\n| `--tau` | 1 |\n\n## SAC (`sac_jax.py`)\n\n| `--tau` | 1 |\n"
    assert flag_errors("docs/flags.md", table, lines) == ["--tau documented under 'Both': not a flag of flowrl_jax.py"]


def test_anchors_follow_githubs_rule():
    assert slug("The target rate ρ = 0.05") == "the-target-rate-ρ--005"
    assert slug("Algorithm hyperparameters: SAC (`sac_jax.py`)") == "algorithm-hyperparameters-sac-sac_jaxpy"
    assert slug("SAC against Brax's SAC at Brax's anchor config") == "sac-against-braxs-sac-at-braxs-anchor-config"
    assert anchors("# A\n\n## A\n\n```\n# not a heading\n```\n") == {"a", "a-1"}
