"""One vocabulary across commands (issue 15): the same flag for the same idea, defaults in every
--help, a description for every command, and eval reading what the artifact's manifest records.

The parser checks walk the real ``edgekit`` parser, so a flag added later to any command is held to
the same rules without this file changing."""
from __future__ import annotations

import argparse
import json
import shutil
from pathlib import Path

import pytest

from edgekit.cli import COMMANDS, build_parser, main
from edgekit.runtime.registry import NAMES


def _parsers() -> dict[str, argparse.ArgumentParser]:
    """Every command and sub-command parser by its command line (``targets show``)."""
    found: dict[str, argparse.ArgumentParser] = {}

    def walk(prefix: str, parser: argparse.ArgumentParser) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, sub in action.choices.items():
                    found[f"{prefix}{name}"] = sub
                    walk(f"{prefix}{name} ", sub)

    walk("", build_parser())
    return found


PARSERS = _parsers()


def _visible(parser: argparse.ArgumentParser) -> dict[str, argparse.Action]:
    """The options ``--help`` lists, by every spelling."""
    return {option: action for action in parser._actions if action.help is not argparse.SUPPRESS
            for option in action.option_strings}


def _each(option: str) -> list[tuple[str, argparse.Action]]:
    return [(command, _visible(parser)[option]) for command, parser in PARSERS.items() if option in _visible(parser)]


def test_every_command_is_walked() -> None:
    assert set(COMMANDS) <= set(PARSERS)
    assert {"targets list", "targets show"} <= set(PARSERS)


def test_every_command_has_a_description() -> None:
    assert [command for command, parser in PARSERS.items() if not (parser.description or "").strip()] == []


def test_old_spellings_are_hidden() -> None:
    assert _each("--backend") == []
    assert [command for command, action in _each("--json") if action.nargs == 0] == []  # no switch-style --json


def test_every_json_takes_a_file() -> None:
    jsons = _each("--json")
    assert {"inspect", "eval", "bench"} <= {command for command, _ in jsons}
    assert [(command, action.metavar) for command, action in jsons if action.metavar != "FILE"] == []


def test_every_runtime_offers_the_same_choices() -> None:
    runtimes = _each("--runtime")
    assert {"quantize", "eval", "bench"} <= {command for command, _ in runtimes}
    assert {command: tuple(action.choices or ()) for command, action in runtimes} == {
        command: tuple(NAMES) for command, _ in runtimes}


def test_output_is_one_file_and_out_dir_a_folder() -> None:
    outputs = _each("--output")
    assert {"export", "prune", "sparsify", "quantize"} <= {command for command, _ in outputs}
    for command, action in outputs:
        assert (command, action.option_strings, action.metavar) == (command, ["-o", "--output"], "FILE")
    assert [command for command, _ in _each("-o")] == [command for command, _ in outputs]
    out_dirs = _each("--out-dir")
    assert {"bench", "run", "demo"} <= {command for command, _ in out_dirs}
    assert [(command, action.metavar) for command, action in out_dirs if action.metavar != "DIR"] == []


def test_every_target_has_targets_dir() -> None:
    assert [command for command, parser in PARSERS.items()
            if "--target" in _visible(parser) and "--targets-dir" not in _visible(parser)] == []


def _states_default(parser: argparse.ArgumentParser, action: argparse.Action) -> bool:
    text = parser._get_formatter()._expand_help(action)
    default = action.default
    values = {str(default)} | ({f"{default:g}"} if isinstance(default, float) else set())
    return "default" in text and any(value in text for value in values)


def test_every_default_is_shown() -> None:
    missing = []
    for command, parser in PARSERS.items():
        for action in parser._actions:
            switch = action.nargs == 0  # store_true and friends: the default is "not given"
            default = action.default
            if (action.option_strings and not switch and action.help is not argparse.SUPPRESS
                    and default is not None and default is not argparse.SUPPRESS and default != []
                    and not _states_default(parser, action)):
                missing.append(f"{command} {action.option_strings[-1]}")
    assert missing == []


@pytest.mark.parametrize("argv, dest, value", [
    (["quantize", "m.onnx", "--backend", "ort", "--calib", "c", "--recipe", "r", "-o", "o.onnx"], "runtime", "onnxruntime"),
    (["quantize", "m.onnx", "--backend", "tflite", "--calib", "c", "--recipe", "r", "-o", "o.tflite"], "runtime", "tflite"),
    (["quantize", "m.onnx", "--runtime", "ort", "--calib", "c", "--recipe", "r", "-o", "o.onnx"], "runtime", "onnxruntime"),
    (["run", "c.yaml", "--output", "somewhere"], "out_dir", "somewhere"),
    (["demo", "--output", "somewhere"], "out_dir", "somewhere"),
    (["inspect", "m.onnx", "--json"], "json", "-"),
])
def test_old_spellings_still_parse(argv: list[str], dest: str, value: str) -> None:
    assert getattr(build_parser().parse_args(argv), dest) == value


@pytest.fixture(scope="module")
def int8_onnx(digits_fp32_onnx: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real INT8 model and its manifest, made with the new spelling."""
    out = tmp_path_factory.mktemp("vocab") / "int8.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--runtime", "onnxruntime", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "16", "--no-sensitivity", "-o", str(out)]) == 0
    return out


def _quantize_stage(artifact: Path) -> dict:
    """The quantize stage's settings and results, less its timings (which vary run to run)."""
    stage = json.loads(Path(f"{artifact}.json").read_text())["stages"][-1]
    return {key: value for key, value in stage.items() if key not in ("seconds", "int8_vs_fp32_speed")}


def test_quantize_runtime_works_like_backend_did(int8_onnx: Path, digits_fp32_onnx: Path, tmp_path: Path) -> None:
    old = tmp_path / "old.onnx"
    assert main(["quantize", str(digits_fp32_onnx), "--backend", "ort", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "--num-samples", "16", "--no-sensitivity", "-o", str(old)]) == 0
    assert _quantize_stage(old) == _quantize_stage(int8_onnx)
    assert old.read_bytes() == int8_onnx.read_bytes()  # the same model, bit for bit
    assert _quantize_stage(int8_onnx)["calibration"]["recipe"] == "digits"


def test_quantize_refuses_a_runtime_it_cannot_write_for(digits_fp32_onnx: Path, tmp_path: Path,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["quantize", str(digits_fp32_onnx), "--runtime", "openvino", "--calib", "builtin:digits/train",
                 "--recipe", "digits", "-o", str(tmp_path / "x.onnx")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "--runtime" in err and "openvino" in err


def test_inspect_json_writes_the_file(int8_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "info.json"
    assert main(["inspect", str(int8_onnx), "--json", str(out)]) == 0
    assert capsys.readouterr().out == ""
    info = json.loads(out.read_text())
    assert info["format"] == "onnx" and info["quantization"] != "none"
    assert main(["inspect", str(int8_onnx), "--json", str(out)]) == 2  # exists: --force to overwrite
    assert "--force" in capsys.readouterr().err
    assert main(["inspect", str(int8_onnx), "--json", "-"]) == 0
    assert json.loads(capsys.readouterr().out) == info


def test_eval_takes_the_recipe_from_the_manifest(int8_onnx: Path, tmp_path: Path) -> None:
    out = tmp_path / "eval.json"
    assert main(["eval", str(int8_onnx), "--data", "builtin:digits/test", "--num-samples", "32",
                 "--json", str(out)]) == 0
    result = json.loads(out.read_text())
    assert (result["recipe"], result["task"], result["num_samples"]) == ("digits", "classification", 32)


def test_eval_without_recipe_or_manifest_fails_in_one_line(int8_onnx: Path, tmp_path: Path,
                                                           capsys: pytest.CaptureFixture[str]) -> None:
    bare = tmp_path / "bare.onnx"
    shutil.copyfile(int8_onnx, bare)  # the model without its manifest
    assert main(["eval", str(bare), "--data", "builtin:digits/test"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and err.startswith("edgekit: error: --recipe: required") and "bare.onnx.json" in err


def test_eval_names_a_bad_recorded_recipe(int8_onnx: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    odd = tmp_path / "odd.onnx"
    shutil.copyfile(int8_onnx, odd)
    manifest = json.loads(Path(f"{int8_onnx}.json").read_text())
    manifest["stages"][-1]["calibration"]["recipe"] = "no-such-recipe"
    Path(f"{odd}.json").write_text(json.dumps(manifest))
    assert main(["eval", str(odd), "--data", "builtin:digits/test"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "odd.onnx.json" in err and ".calibration.recipe" in err
