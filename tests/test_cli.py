"""The ``beampipe`` command as a user runs it: exit codes and messages of validate and run."""

from __future__ import annotations

import re
import textwrap
from pathlib import Path

import pytest
from conftest import EXAMPLE, REPO, beampipe

PIPELINE = "examples/xas-p65/pipeline.yaml"  # relative to REPO: messages name it as given
DATA = EXAMPLE / "data" / "20K_GOE_Fe_K_240.00000.xdi"

# Two problems on known lines: a param of the wrong type (line 11) and a misspelt input port in
# a connection (line 17). Everything else is valid, so a run would start if these were not caught.
BROKEN = f"""\
name: broken
nodes:
  scan:
    use: xdi_replay
    params: {{paths: ['{DATA}'], pace: max}}
  mu:
    use: xas.transmission
  normalize:
    use: xas.normalize
    params:
      every: ten
  nexus:
    use: nexus_writer
    params: {{path: out/broken.nxs}}
connections:
  - scan.out -> mu.in
  - mu.out -> normalize.inn
  - mu.out -> nexus.points
  - normalize.out -> nexus.normalized
"""

EVERY_LINE = "broken.yaml:11: node 'normalize': param 'every': "
PORT_LINE = "broken.yaml:17: node 'normalize': unknown port 'inn' (ports of xas.normalize: 'in')"


@pytest.fixture
def broken(tmp_path: Path) -> Path:
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    return path


def _problems(stderr: str) -> list[str]:
    """The reported problems, one per line, without the leading ``error:``."""
    return [line.removeprefix("error: ") for line in stderr.strip().splitlines()]


def test_validate_the_example_prints_ok_with_the_counts():
    done = beampipe("validate", PIPELINE, cwd=REPO)
    assert done.returncode == 0, done.stderr
    out = done.stdout + done.stderr
    assert re.search(r"\bok\b.*'xas-p65': 4 nodes, 4 connections", out), out
    assert "Traceback" not in out


def test_validate_a_broken_file_names_file_line_and_node(broken: Path):
    done = beampipe("validate", broken.name, cwd=broken.parent)
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr.startswith("error: ")
    problems = _problems(done.stderr)
    assert len(problems) == 2, problems  # every problem, in line order
    assert problems[0].startswith(EVERY_LINE), problems
    assert "valid integer" in problems[0] and "'ten'" in problems[0]
    assert problems[1] == PORT_LINE


def test_run_a_broken_file_reports_the_same_and_starts_nothing(broken: Path, tmp_path: Path):
    tmp = tmp_path / "tmp"  # the launcher's run directories would appear here
    tmp.mkdir()
    validated = beampipe("validate", broken.name, cwd=broken.parent)
    done = beampipe("run", broken.name, cwd=broken.parent, env={"TMPDIR": str(tmp)})
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert done.stderr == validated.stderr
    assert not list(tmp.iterdir()), "a run directory was created"
    assert not (broken.parent / "out").exists(), "the writer ran"


def test_set_without_node_param_value_is_refused():
    done = beampipe("validate", PIPELINE, "--set", "nopoint", cwd=REPO, env={"COLUMNS": "200"})
    assert done.returncode != 0
    assert "Traceback" not in done.stdout + done.stderr
    assert "--set" in done.stderr
    assert "'nopoint': expected 'node.param=value'" in done.stderr


@pytest.mark.parametrize("command", ["validate", "run"])
def test_set_a_value_of_the_wrong_type_names_param_override_and_node(command: str, tmp_path: Path):
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    done = beampipe(
        command, PIPELINE, "--set", "normalize.every=ten", cwd=REPO, env={"TMPDIR": str(tmp)}
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stdout + done.stderr
    assert _problems(done.stderr) == [
        f"{PIPELINE}:12: node 'normalize': param 'every': Input should be a valid integer, "
        "got 'ten' (set by override 'normalize.every')"
    ]
    assert not list(tmp.iterdir())


def test_set_a_value_that_is_not_yaml_is_an_error_not_a_traceback():
    done = beampipe("validate", PIPELINE, "--set", "normalize.every=[1", cwd=REPO)
    assert "Traceback" not in done.stdout + done.stderr
    assert done.returncode == 2
    assert "normalize.every" in done.stderr


def test_validate_finds_a_module_next_to_the_pipeline_file(tmp_path: Path):
    folder = tmp_path / "pipe"
    folder.mkdir()
    (folder / "my_nodes.py").write_text(
        textwrap.dedent(
            """
            import beampipe

            @beampipe.worker
            def double(msg):
                return beampipe.Message(data={"y": msg.data["x"] * 2})
            """
        )
    )
    (folder / "pipeline.yaml").write_text(
        textwrap.dedent(
            f"""\
            nodes:
              scan:
                use: xdi_replay
                params: {{paths: ['{DATA}']}}
              double:
                use: my_nodes:double
              triple:
                use: my_nodes:triple
            connections:
              - scan -> double
              - scan -> triple
            """
        )
    )
    done = beampipe("validate", "pipe/pipeline.yaml", cwd=tmp_path)  # not the module's folder
    assert done.returncode == 2, done.stdout + done.stderr
    assert _problems(done.stderr) == [
        "pipe/pipeline.yaml:8: node 'triple': module 'my_nodes' has no attribute 'triple'"
    ]


def test_help_lists_the_commands():
    done = beampipe("--help", cwd=REPO, env={"COLUMNS": "200"})
    assert done.returncode == 0, done.stderr
    words = re.findall(r"[\w-]+", done.stdout)
    assert "run" in words and "validate" in words
