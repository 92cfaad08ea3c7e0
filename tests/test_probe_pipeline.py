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


def _valid_pipeline(tmp_path: Path) -> Path:
    config = tmp_path / "pipeline.yaml"
    config.write_text(yaml.safe_dump(BASE))
    return config


@pytest.mark.parametrize("where", ["a-file", "a-file/run"])
def test_run_output_that_is_or_is_under_a_file(where: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    code = main(["run", str(_valid_pipeline(tmp_path)), "--output", str(tmp_path / where)])
    assert_one_line_error(code, capsys.readouterr().err, "a-file", "file")
    assert (tmp_path / "a-file").read_text() == "not a folder"


def test_second_run_on_a_busy_run_folder_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """Another process (here a stand-in holding the run folder's lock, as ``edgekit run`` does) is
    working in the folder: a second run would redo its stages and race on stages.json."""
    import subprocess
    import sys

    from model_files import ROOT

    run_dir = tmp_path / "run"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from edgekit.atomic import claim; claim(sys.argv[1]); "
                               "print('held', flush=True); time.sleep(60)", str(run_dir)],
        stdout=subprocess.PIPE, text=True, env={"PYTHONPATH": str(ROOT), "PATH": ""})
    try:
        assert holder.stdout.readline().strip() == "held"
        code = main(["run", str(_valid_pipeline(tmp_path)), "--output", str(run_dir)])
        assert_one_line_error(code, capsys.readouterr().err, str(run_dir), "another edgekit process")
        assert not run_dir.exists()
    finally:
        holder.kill()
        holder.wait()


def test_outputs_on_a_read_only_filesystem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A read-only mount passes the permission check (and root passes any): the lock, the temporary
    file and the run folder must still fail as one line naming the output."""
    import os
    import subprocess

    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "--bind", str(ro), str(ro)], capture_output=True).returncode:
        pytest.skip("needs root and bind mounts to make a read-only folder")
    try:
        if subprocess.run(["mount", "-o", "remount,bind,ro", str(ro)], capture_output=True).returncode:
            pytest.skip("cannot remount read-only here")
        for argv, needle in (
            (["export", "edgekit.zoo:digits_cnn", "--input-shape", "1,3,32,32", "-o", str(ro / "m.onnx")], "m.onnx"),
            (["sparsify", "edgekit.zoo:digits_cnn", "--sparsity", "0.5", "-o", str(ro / "s.pt")], "s.pt"),
            (["run", str(_valid_pipeline(tmp_path)), "--output", str(ro / "run")], "ro"),
        ):
            code = main(argv)
            assert_one_line_error(code, capsys.readouterr().err, needle)
    finally:
        subprocess.run(["umount", str(ro)], capture_output=True)


def test_model_key_follows_the_local_code_a_factory_imports(tmp_path: Path) -> None:
    """``nets.py:build`` importing ``blocks.py`` (or a package beside it): editing the helper changes
    the model, so the train stage's key must change; an unrelated file must not."""
    from edgekit.pipeline.config import parse_config
    from edgekit.pipeline.stages import StepContext
    from edgekit.pipeline.steps import reads_train

    (tmp_path / "nets.py").write_text("from blocks import act\nfrom layers.deep import norm\n"
                                      "def build():\n    return act()\n")
    (tmp_path / "blocks.py").write_text("import torch.nn as nn\ndef act():\n    return nn.ReLU()\n")
    (tmp_path / "layers" / "deep").mkdir(parents=True)
    (tmp_path / "layers" / "__init__.py").write_text("")
    (tmp_path / "layers" / "deep" / "__init__.py").write_text("def norm():\n    return None\n")
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["model"]["source"] = f"{tmp_path / 'nets.py'}:build"
    ctx = StepContext(parse_config(data, "p.yaml"), tmp_path / "run")

    first = reads_train(ctx)
    (tmp_path / "notes.txt").write_text("not code")
    assert reads_train(ctx) == first
    (tmp_path / "blocks.py").write_text("import torch.nn as nn\ndef act():\n    return nn.Tanh()\n")
    second = reads_train(ctx)
    assert second != first
    (tmp_path / "layers" / "deep" / "__init__.py").write_text("def norm():\n    return 1\n")
    assert reads_train(ctx) != second


@pytest.mark.parametrize("model", [{"source": "torchvision:no_such_net"}, {"kwargs": {"width": "x"}}],
                         ids=["unknown-torchvision-name", "kwargs-of-the-wrong-type"])
def test_run_that_fails_before_writing_anything_leaves_no_run_folder(model: dict, tmp_path: Path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["model"].update(model)
    code, err = _run(yaml.safe_dump(data), tmp_path, capsys)
    assert_one_line_error(code, err)
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("model, key", [
    ({"kwargs": {"width": "x"}}, "model.kwargs"),
    ({"source": "torchvision:no_such_net"}, "model.source"),
    ({"input_shape": [1, 1, 32, 32]}, "model.input_shape"),  # an RGB model given one channel
])
def test_a_model_that_cannot_be_built_or_run_is_named_by_its_key(model: dict, key: str, tmp_path: Path,
                                                                  capsys: pytest.CaptureFixture[str]) -> None:
    """Checked by building and running the model once, before any stage: the error names the pipeline
    file and the key, not only the factory, and no run folder is made."""
    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["model"].update(model)
    code, err = _run(yaml.safe_dump(data), tmp_path, capsys)
    assert_one_line_error(code, err, "pipeline.yaml", f"key '{key}'")
    assert not (tmp_path / "run").exists()


def test_tflite_float_fallback_is_a_quantize_input(tmp_path: Path) -> None:
    """``quantize.tflite.float_fallback`` reaches the backend and changes the quantize stage's key."""
    from edgekit.pipeline.config import parse_config
    from edgekit.pipeline.stages import StepContext
    from edgekit.pipeline.steps import _backend_options, reads_quantize

    data = yaml.safe_load(yaml.safe_dump(BASE))
    data["quantize"]["tflite"] = {}
    ctx = StepContext(parse_config(data, "p.yaml"), tmp_path / "run")
    data["quantize"]["tflite"] = {"float_fallback": True}
    fallback = StepContext(parse_config(data, "p.yaml"), tmp_path / "run")
    assert reads_quantize(fallback) != reads_quantize(ctx)
    assert _backend_options(fallback)["tflite"]["float_fallback"] and not _backend_options(ctx)["tflite"]["float_fallback"]
