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


# ---------------------------------------------------------------------------------------------------------------------
# The README's results table: every number is what its linked CSV gives
# ---------------------------------------------------------------------------------------------------------------------
NUMBER_LINK = re.compile(r"\[~?([0-9][0-9 ]*)\]\(([^)\s]+\.csv)\)")


def learning_table_final_mean(path: Path) -> tuple[str, int]:
    """What `python benchmarks/learning_table.py <path>` prints as the mean final return over seeds, and the file's
    last evaluation step."""
    import contextlib
    import io

    from benchmarks import learning_table
    from common.run.plotting import read_eval_csv

    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        learning_table.main([str(path)])
    match = re.search(r"final: mean (\S+),", printed.getvalue())
    assert match, f"learning_table.py printed no final mean for {path}:\n{printed.getvalue()}"
    return match.group(1), int(read_eval_csv(path)["step"].max())


def section(text: str, heading: str) -> str:
    """The text of the level-2 section `## heading`, up to the next level-2 heading."""
    assert f"\n## {heading}\n" in text, f"no section '## {heading}'"
    return text.split(f"\n## {heading}\n", 1)[1].split("\n## ", 1)[0]


def results_table_errors(readme: str, root: Path = ROOT) -> tuple[list[str], int]:
    """(errors, cells checked) for the README's Results section: every number linked to a CSV equals the mean final
    return that benchmarks/learning_table.py computes from it, and in the table, the row's env steps are the CSV's
    last evaluation (`100 k` = 100 000, rounded to thousands)."""
    errors, checked = [], 0
    for line in section(readme, "Results").splitlines():
        cells = [cell.strip() for cell in line.strip().strip("|").split("|")] if line.lstrip().startswith("|") else []
        steps = re.fullmatch(r"(\d+) k", cells[1]) if len(cells) > 1 else None
        for number, target in NUMBER_LINK.findall(line):
            path = (root / target).resolve()
            if not path.is_file():
                errors.append(f"{target}: no such file")
                continue
            mean, last_step = learning_table_final_mean(path)
            checked += 1
            if number.replace(" ", "") != mean:
                errors.append(f"{target}: the README says {number}, learning_table.py gives a final mean of {mean}")
            if steps and round(last_step / 1000) != int(steps.group(1)):
                errors.append(f"{target}: the row says {cells[1]} env steps, the CSV ends at {last_step}")
    return errors, checked


def test_every_number_of_the_readmes_results_table_is_what_its_csv_gives():
    errors, checked = results_table_errors((ROOT / "README.md").read_text())
    assert not errors, "\n".join(errors)
    assert checked >= 12  # the table's eleven CSV cells and Brax's cartpole-balance figure


def test_the_results_table_check_catches_a_wrong_number_and_a_wrong_budget():
    readme = (ROOT / "README.md").read_text()
    table_row = next(line for line in section(readme, "Results").splitlines()
                     if line.startswith("| cheetah-run | 100 k | [334]"))
    for wrong in (table_row.replace("[334]", "[335]", 1), table_row.replace("| 100 k |", "| 60 k |", 1)):
        errors, _ = results_table_errors(readme.replace(table_row, wrong))
        assert len(errors) >= 1 and all("flowrl_cheetah_run" in e or "env steps" in e for e in errors), errors


# ---------------------------------------------------------------------------------------------------------------------
# Every docs page is reachable from the README
# ---------------------------------------------------------------------------------------------------------------------
def markdown_links(path: Path) -> set[Path]:
    """The Markdown files that `path` links to (relative links in its prose, anchors dropped)."""
    targets = set()
    for kind, _, lines in split_blocks(path.read_text()):
        if kind != "text":
            continue
        for target in LINK.findall(INLINE_CODE.sub("", "\n".join(lines))):
            file_part = target.partition("#")[0]
            if file_part.endswith(".md") and not re.match(r"[a-z][a-z0-9+.-]*:", target):
                targets.add((path.parent / file_part).resolve())
    return targets


def unreachable_pages(root: Path) -> list[str]:
    """docs/*.md pages that no chain of links starting at root/README.md reaches."""
    seen, todo = set(), [(root / "README.md").resolve()]
    while todo:
        page = todo.pop()
        if page in seen or not page.is_file():
            continue
        seen.add(page)
        todo.extend(markdown_links(page))
    return sorted(str(p.relative_to(root)) for p in (root / "docs").glob("*.md") if p.resolve() not in seen)


def test_every_docs_page_is_reachable_from_the_readme():
    assert not unreachable_pages(ROOT), "docs pages that no link from README.md leads to"


def test_the_reachability_check_finds_an_orphan_page(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "README.md").write_text("See [a](docs/a.md).\n")
    (tmp_path / "docs" / "a.md").write_text("# A\n\nThen [b](b.md#x).\n")
    (tmp_path / "docs" / "b.md").write_text("# B\n")
    (tmp_path / "docs" / "orphan.md").write_text("# Orphan\n\n`[in code](c.md)` [back](../README.md)\n")
    assert unreachable_pages(tmp_path) == ["docs/orphan.md"]


# ---------------------------------------------------------------------------------------------------------------------
# docs/layout.md lists every file it should
# ---------------------------------------------------------------------------------------------------------------------
def layout_paths(text: str) -> set[str]:
    """The paths listed in the first code block of docs/layout.md: an entry is a line indented by 0, 2, 4, … spaces
    (a name ending in `/` opens a folder for the entries indented below it); a description's continuation lines are
    indented by 20 spaces or more."""
    block = next(lines for kind, _, lines in split_blocks(text) if kind == "code")
    folders, paths = [], set()
    for line in block:
        indent = len(line) - len(line.lstrip(" "))
        if not line.strip() or indent >= 20:
            continue
        assert indent % 2 == 0 and indent // 2 <= len(folders), f"layout.md: an entry out of place: {line!r}"
        name = line.split()[0]
        folders = folders[:indent // 2]
        path = "".join(folders) + name
        paths.add(path.rstrip("/"))
        if name.endswith("/"):
            folders.append(name)
    return paths


def files_the_layout_must_list(root: Path = ROOT) -> set[str]:
    """Every Python or shell file of common/ and benchmarks/ (not the committed results), the algorithm files, CI,
    the lock and the package."""
    files = {"flowrl_jax.py", "sac_jax.py", ".ci/run", "requirements.txt", "pyproject.toml"}
    for folder in ("common", "benchmarks"):
        for path in (root / folder).rglob("*"):
            relative = path.relative_to(root).as_posix()
            if path.suffix in (".py", ".sh") and not relative.startswith("benchmarks/results/"):
                files.add(relative)
    return files


def test_the_layout_lists_every_file_and_no_file_that_is_gone():
    listed = layout_paths((ROOT / "docs" / "layout.md").read_text())
    missing = sorted(files_the_layout_must_list() - listed)
    assert not missing, f"docs/layout.md does not list: {', '.join(missing)}"
    gone = sorted(path for path in listed if not (ROOT / path).exists())
    assert not gone, f"docs/layout.md lists what does not exist: {', '.join(gone)}"


def test_the_layout_parser_nests_folders():
    text = ("```\ntop.py       x\na/           folder\n  b.py       y\n                     more of y\n  c/\n"
            "    d.py     z\ne.md         w\n```\n")
    assert layout_paths(text) == {"top.py", "a", "a/b.py", "a/c", "a/c/d.py", "e.md"}
    assert "common/core/chunk.py" in files_the_layout_must_list() and "benchmarks/gpu_check.sh" in \
        files_the_layout_must_list()


# ---------------------------------------------------------------------------------------------------------------------
# docs/flags.md follows --help's groups
# ---------------------------------------------------------------------------------------------------------------------
def flags_by_heading(text: str) -> dict[str, set[str]]:
    """Level-2 heading of docs/flags.md -> the flags in the first cells of its table rows, in page order."""
    result = {}
    for kind, heading, lines in split_blocks(text):
        if kind == "heading":
            result.setdefault(heading, set())
        elif kind == "text":
            for row in lines:
                if row.lstrip().startswith("|"):
                    result.setdefault(heading, set()).update(FLAG.findall(row.strip().strip("|").split("|")[0]))
    return result


def test_the_flags_page_has_the_groups_of_help_in_its_order():
    from common.run.cli import HELP_GROUPS

    def heading(group: str) -> str:
        return "Presets" if group == "preset" else group.capitalize()

    documented = flags_by_heading((ROOT / "docs" / "flags.md").read_text())
    expected = [heading(group) for group in HELP_GROUPS]
    assert [h for h in documented if h in expected] == expected, list(documented)
    headings = list(documented)
    assert headings.index(expected[-1]) < headings.index("Algorithm hyperparameters: both scripts")
    for group, names in HELP_GROUPS.items():
        flags = {"--" + name.replace("_", "-") for name in names}
        if group != "preset":  # the presets' table names presets; --preset itself is in its prose
            assert documented[heading(group)] == flags, f"{heading(group)}: {documented[heading(group)] ^ flags}"


# ---------------------------------------------------------------------------------------------------------------------
# docs/gpu.md and the README: what the defaults make of a run
# ---------------------------------------------------------------------------------------------------------------------
def run_counts(num_envs: int, updates_per_iteration: int, start_steps: int, log_interval: int, total_steps: int):
    """(iterations, env steps, updates) of a run, as common/core/chunk.py and common/run/training.py count them:
    whole chunks of ceil(log_interval / E) iterations until total_steps, and U updates in each iteration whose env
    step count, once its envs have stepped, has reached start_steps."""
    from common.core.chunk import ChunkSpec

    spec = ChunkSpec(updates_per_iteration=updates_per_iteration, batch_size=1, start_steps=start_steps,
                     log_interval=log_interval, replay_capacity=1, replay_shards=1)
    per_chunk = spec.iterations(num_envs)
    iterations = -(-total_steps // (per_chunk * num_envs)) * per_chunk
    learning = sum(1 for i in range(1, iterations + 1) if i * num_envs >= start_steps)
    return iterations, iterations * num_envs, learning * updates_per_iteration


def spaced(number: int) -> str:
    return f"{number:,}".replace(",", " ")


def test_the_gpu_page_and_the_readme_state_the_update_counts_of_the_defaults():
    from common.run.args import RunArgs
    from common.run.presets import PRESETS

    args = RunArgs()
    iterations, env_steps, updates = run_counts(args.num_envs, args.updates_per_iteration, args.start_steps,
                                                args.log_interval, args.total_steps)
    gpu = (ROOT / "docs" / "gpu.md").read_text()
    for number in (iterations, env_steps, updates, updates // 2):
        assert spaced(number) in gpu, f"docs/gpu.md does not state {spaced(number)}"
    assert f"1/{args.num_envs // args.updates_per_iteration}**" in gpu
    paper = {**vars(args), **PRESETS["paper"].values("humanoid-walk", "playground")}
    assert spaced(run_counts(paper["num_envs"], paper["updates_per_iteration"], paper["start_steps"],
                             paper["log_interval"], paper["total_steps"])[2]) in gpu
    playground = {**vars(args), **PRESETS["playground-sac"].values("humanoid-walk", "playground")}
    assert spaced(run_counts(playground["num_envs"], playground["updates_per_iteration"], playground["start_steps"],
                             playground["log_interval"], playground["total_steps"])[2]) in gpu
    readme = section((ROOT / "README.md").read_text(), "On a GPU")
    assert f"about {spaced(round(updates, -2))} updates" in readme


def test_the_run_count_follows_the_chunk():
    assert run_counts(4, 2, 8, 10, 20) == (6, 24, 10)  # chunks of 3 iterations (12 steps); updates from step 8 on


# ---------------------------------------------------------------------------------------------------------------------
# The package: its ranges admit the tested lock, and each dependency is one the code imports
# ---------------------------------------------------------------------------------------------------------------------
def pyproject() -> dict:
    import tomllib

    return tomllib.loads((ROOT / "pyproject.toml").read_text())


def lock() -> dict[str, str]:
    """requirements.txt: canonical name -> the version pinned for this interpreter."""
    from packaging.requirements import Requirement
    from packaging.utils import canonicalize_name

    pins = {}
    for line in (ROOT / "requirements.txt").read_text().splitlines():
        line = line.split(" #")[0].strip()
        if not line or line.startswith("#"):
            continue
        requirement = Requirement(line)
        if requirement.marker is None or requirement.marker.evaluate():
            (version,) = [spec.version for spec in requirement.specifier if spec.operator == "=="]
            pins[canonicalize_name(requirement.name)] = version
    return pins


def package_requirements():
    from packaging.requirements import Requirement

    project = pyproject()["project"]
    return [(None, Requirement(text)) for text in project["dependencies"]] + [
        (extra, Requirement(text)) for extra, texts in project["optional-dependencies"].items() for text in texts]


def test_the_package_ranges_admit_every_pin_of_the_lock():
    from packaging.utils import canonicalize_name

    from importlib.metadata import version

    pins = lock()
    for extra, requirement in package_requirements():
        name = canonicalize_name(requirement.name)
        # msgpack and scipy come with flax and jax: the lock pins them through those, as this environment holds them
        pinned = pins.get(name) or version(requirement.name)
        assert requirement.specifier.contains(pinned), f"{requirement} ({extra or 'base'}): the lock has {pinned}"
    assert {"jax", "flax", "mujoco", "playground", "dm-control", "myosuite", "pytest"} <= set(pins)


CODE = ("flowrl_jax.py", "sac_jax.py", "common")
# How a distribution shows in the code, where not as `import <its name>`.
IMPORTED_AS = {"mujoco-mjx": r"from mujoco import mjx|mujoco\.mjx", "playground": r"(import|from) mujoco_playground\b",
               "imageio-ffmpeg": r"(import|from) imageio_ffmpeg\b", "dm-control": r"(import|from) dm_control\b"}


def code_text(*roots: str) -> str:
    return "\n".join(path.read_text() for root in roots
                     for path in ([ROOT / root] if root.endswith(".py") else sorted((ROOT / root).rglob("*.py"))))


def imported_modules(*roots: str) -> set[str]:
    """The top-level modules that the Python files under `roots` import (absolute imports, read with ast)."""
    import ast

    modules = set()
    for root in roots:
        for path in [ROOT / root] if root.endswith(".py") else sorted((ROOT / root).rglob("*.py")):
            for node in ast.walk(ast.parse(path.read_text())):
                if isinstance(node, ast.Import):
                    modules.update(alias.name.split(".")[0] for alias in node.names)
                elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                    modules.add(node.module.split(".")[0])
    return modules


def test_every_package_dependency_is_used_and_every_imported_package_is_declared():
    import sys as system
    from importlib.metadata import packages_distributions

    from packaging.utils import canonicalize_name

    code, tests = code_text(*CODE), code_text("tests", "benchmarks")
    readme_test_command = (ROOT / ".ci" / "run").read_text()
    for extra, requirement in package_requirements():
        name = canonicalize_name(requirement.name)
        pattern = IMPORTED_AS.get(name, rf"(import|from) {re.escape(requirement.name)}\b")
        if name == "pytest-xdist":
            assert " -n 2 " in readme_test_command  # a pytest plugin: used through -n, never imported
        else:
            assert re.search(pattern, tests if extra == "test" else code), f"{requirement}: nothing imports it"

    declared = {canonicalize_name(r.name) for _, r in package_requirements()}
    modules = imported_modules(*CODE)
    local = {"common", "flowrl_jax", "sac_jax"}
    optional = {"wandb"}  # --wandb only, which names `pip install wandb` when it is missing
    owners = packages_distributions()
    for module in sorted(modules - set(system.stdlib_module_names) - local - optional):
        assert any(canonicalize_name(d) in declared for d in owners.get(module, [])), \
            f"the code imports {module} ({owners.get(module)}), which pyproject.toml does not declare"


def test_the_version_and_the_citation_agree_everywhere():
    import yaml

    version = pyproject()["project"]["version"]
    citation = yaml.safe_load((ROOT / "CITATION.cff").read_text())
    assert citation["version"] == version and citation["license"] == pyproject()["project"]["license"]
    assert re.search(rf"^## {re.escape(version)} ", (ROOT / "CHANGELOG.md").read_text(), re.MULTILINE)
    readme = (ROOT / "README.md").read_text()
    assert f"Version {version}." in readme
    bibtex = re.search(r"```bibtex\n(.*?)```", readme, re.DOTALL).group(1)
    assert f"version = {{{version}}}" in bibtex and f"title   = {{{citation['title']}" in bibtex
    (paper,) = citation["references"]
    assert f"title         = {{{paper['title']}}}" in bibtex
    assert paper["identifiers"][0]["value"] == "arXiv:2506.12811" and "eprint        = {2506.12811}" in bibtex
    authors = " and ".join(f"{a['family-names']}, {a['given-names']}" for a in paper["authors"])
    assert f"author        = {{{authors}}}" in bibtex


# ---------------------------------------------------------------------------------------------------------------------
# User prose without the lab notebook
# ---------------------------------------------------------------------------------------------------------------------
COMMIT = re.compile(r"\b(?=[0-9a-f]*[0-9])(?=[0-9a-f]*[a-f])[0-9a-f]{7,40}\b")
DATE = re.compile(r"\b20\d\d-\d\d-\d\d\b")


@pytest.mark.parametrize("path", documents(), ids=doc_ids())
def test_no_commit_or_date_in_the_documentation(path):
    """Provenance (machine, date, commit) lives in benchmarks/results/, which the documents link to."""
    text = path.read_text()
    found = COMMIT.findall(text) + DATE.findall(text)
    assert not found, f"{', '.join(found)}: provenance belongs in the results file the page links to"


def test_the_notebook_check_catches_a_commit_and_a_date():
    assert COMMIT.findall("at commit 2c87dc6, not 1e-3 or 512 or decade") == ["2c87dc6"]
    assert DATE.findall("on 2026-12-02, not 2026-12") == ["2026-12-02"]
