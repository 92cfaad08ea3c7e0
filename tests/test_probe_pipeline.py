"""Neighbours of the issue-10 pipeline-file checks that no other test names: values past the command
line's own limits, run names that are paths, seeds numpy cannot take, host strings that name no
host, and YAML alias bombs. Each is one line naming the file and the key, exit 2, before any work."""
from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from edgekit.cli import main
from model_files import assert_one_line_error

BASE = {"name": "p", "model": {"source": "edgekit.zoo:digits_cnn", "input_shape": [1, 3, 32, 32]},
        "data": {"recipe": "digits", "calib": "builtin:digits/train", "eval": "builtin:digits/test"},
        "prune": None, "distill": None, "quantize": {"num_samples": 8, "tflite": None}, "bench": {"runs": 2, "warmup": 0}}


def _run(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str]:
    config = tmp_path / "pipeline.yaml"
    config.write_text(text)
    try:
        code = main(["run", str(config), "--output", str(tmp_path / "run")])
    except SystemExit as exc:
        code = int(exc.code or 0)
    return code, capsys.readouterr().err


@pytest.mark.parametrize("key, value, needle", [
    ("name", "../../escape", "plain folder name"),
    ("name", "a/b", "plain folder name"),
    ("model.input_shape", [1, 3, 99999999999999999999, 32], "elements"),
    ("model.input_shape", [1, 3, 100000, 100000], "elements"),
    ("quantize.seed", -1, "at least 0"),
    ("bench.runs", 99999999999, "at most 1,000,000"),
    ("bench.warmup", 99999999999, "at most 1,000,000"),
    ("bench.threads", 100000, "at most 1,024"),
    ("train.seed", 99999999999999999999, "at most 4,294,967,295"),
    ("train.epochs", 99999999999, "at most 100,000"),
    ("train.lr", 1e9, "at most 10"),
    ("distill.temperature", float("inf"), "at most 10,000"),
    ("prune.round_to", 99999999999, "at most 4,096"),
    ("prune.steps", 100000, "at most 100"),
    ("bench.hosts", [{"host": "user@board:99999"}], "1 to 65535"),
    ("bench.hosts", [{"host": "user@board:0"}], "1 to 65535"),
    ("bench.hosts", [{"host": "a b c"}], "not a host name"),
    ("bench.hosts", [{"host": "-oProxyCommand=touch x"}], "not a host name"),
])
def test_pipeline_values_past_the_cli_limits_fail_before_any_work(key: str, value: object, needle: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    *parents, last = key.split(".")
    section = data
    for part in parents:
        if section.get(part) is None:  # prune: null -> a section of its own
            section[part] = {}
        section = section[part]
    section[last] = value
    code, err = _run(yaml.safe_dump(data), tmp_path, capsys)
    assert_one_line_error(code, err, "pipeline.yaml", key.split(".")[0], needle)
    assert not (tmp_path / "run").exists()


def _alias_bomb(depth: int = 9) -> list[str]:
    lines = ["    a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    lines += [f"    a{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, depth + 1)]
    return lines


@pytest.mark.parametrize("text", [
    "\n".join(["name: p", "model:", "  source: edgekit.zoo:digits_cnn", "  input_shape: [1, 3, 32, 32]", "  kwargs:",
               *_alias_bomb(), "data: {recipe: digits, calib: 'builtin:digits/train', eval: 'builtin:digits/test'}"]),
    "name: &a [*a]\n",
], ids=["billion-laughs-in-kwargs", "recursive-alias"])
def test_yaml_alias_bombs_are_refused_not_expanded(text: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, err = _run(text + "\n", tmp_path, capsys)
    assert_one_line_error(code, err, "pipeline.yaml", "aliases")
    assert not (tmp_path / "run").exists()


def test_alias_bomb_target_profile(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bomb = tmp_path / "bomb.yaml"
    bomb.write_text("name: x\nextra:\n" + "\n".join(_alias_bomb()) + "\n")
    code = main(["targets", "show", str(bomb)])
    assert_one_line_error(code, capsys.readouterr().err, "bomb.yaml", "aliases")
