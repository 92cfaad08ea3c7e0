"""Property: no malformed argument or file makes any command crash, print a traceback or write a file.

Each example starts from arguments that would work and breaks one or two of them (truncated,
empty, random or mistyped files, wrong suffixes, directories, missing paths, absurd numbers). The
command must exit with 2 and exactly one ``edgekit: error:`` line (or argparse's usage error),
never reach the internal-error handler, and leave the output folder as it was. Commands that may
load a .tflite run in a child process, so a signal fails the test instead of killing it.
"""
from __future__ import annotations

import contextlib
import hashlib
import io
import os
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from edgekit.cli import COMMANDS, main
from model_files import assert_one_line_error, error_lines, run_cli, tiny_onnx, tiny_tflite, truncated

SETTINGS = settings(deadline=None, derandomize=True, database=None, suppress_health_check=list(HealthCheck))
ABSURD_INTS = ["0", "-1", "1e12", "nan", "abc", "", "99999999999999999999999"]
ABSURD_FLOATS = ["0", "-1", "1e12", "nan", "inf", "-inf", "abc", ""]
BAD_SHAPES = ["1,3,224", "0,3,8,8", "-1,3,8,8", "1,3,100000,100000", "nan", "", "1,,x", "1,3,8,8,8,8,8,8"]


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Inputs good and bad, all real files; each example writes only into its own ``out/``."""
    root = tmp_path_factory.mktemp("fuzz")
    src = root / "in"
    src.mkdir()
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, 4096, dtype=np.uint8).tobytes()
    tflite = tiny_tflite(src / "good.tflite")
    onnx_path = tiny_onnx(src / "good.onnx")
    truncated(tflite, src / "trunc.tflite")
    truncated(onnx_path, src / "trunc.onnx", 0.5)
    for suffix in (".onnx", ".tflite", ".pt", ".yaml", ".json", ".npy", ".npz", ".py"):
        (src / f"empty{suffix}").write_bytes(b"")
        (src / f"random{suffix}").write_bytes(noise)
        (src / f"dir{suffix}").mkdir()
    (src / "tflite_as.onnx").write_bytes(tflite.read_bytes())
    (src / "onnx_as.tflite").write_bytes(onnx_path.read_bytes())
    (src / "good.onnx.bin").write_bytes(onnx_path.read_bytes())
    (src / "list.yaml").write_text("- a\n- b\n")
    (src / "size0.yaml").write_text("name: r\nsize: [0, 0]\nmean: [0.5]\nstd: [0.5]\n")
    (src / "nanstd.yaml").write_text("name: r\nsize: [8, 8]\nmean: [0.5]\nstd: [.nan]\n")
    (src / "huge.yaml").write_text("name: r\nsize: [100000000, 100000000]\nmean: [0.5]\nstd: [0.5]\n")
    (src / "syntax.py").write_text("def factory(:\n")
    (src / "raises.py").write_text("raise RuntimeError('import-time failure')\n")
    np.save(src / "vector.npy", np.zeros(5, np.float32))
    good_npy = src / "wrongshape.npy"
    np.save(good_npy, np.zeros((4, 3, 5, 5), np.float32))
    truncated(good_npy, src / "trunc.npy", 0.6)
    (src / "nolabels_dir").mkdir()
    bad_images = src / "bad_images" / "cls"
    bad_images.mkdir(parents=True)
    (bad_images / "x.png").write_bytes(noise)
    (src / "json_list").mkdir()
    (src / "json_list" / "bench").mkdir()
    (src / "json_list" / "bench" / "b.json").write_text("[1, 2, 3]")
    (src / "json_noise").mkdir()
    (src / "json_noise" / "eval").mkdir()
    (src / "json_noise" / "eval" / "e.json").write_bytes(noise)
    (src / "json_nan").mkdir()
    (src / "json_nan" / "eval").mkdir()
    (src / "json_nan" / "eval" / "e.json").write_text('{"schema": "edgekit.eval/1", "artifact": "m.onnx", "top1": NaN}')
    (src / "afile").write_text("a file, not a folder")
    return root


MODEL_FILES = ["good.onnx.bin", "trunc.onnx", "empty.onnx", "random.onnx", "dir.onnx", "tflite_as.onnx",
               "missing.onnx", "random.pt", "empty.yaml"]
TFLITE_FILES = ["trunc.tflite", "empty.tflite", "random.tflite", "dir.tflite", "onnx_as.tflite", "missing.tflite"]
SOURCES = ["missing.pt", "random.pt", "empty.pt", "dir.pt", "random.onnx", "syntax.py:factory", "raises.py:factory",
           "no_such_module_xyz:f", "edgekit.zoo:no_such_factory", "torchvision:no_such_model", "random.py:factory"]
DATA = ["missing_dir", "nolabels_dir", "random.npy", "empty.npy", "trunc.npy", "vector.npy", "wrongshape.npy",
        "random.npz", "dir.npy", "random.json", "builtin:nope", "builtin:digits/nope", "bad_images"]
RECIPES = ["nope", "random.yaml", "empty.yaml", "list.yaml", "dir.yaml", "size0.yaml", "nanstd.yaml", "huge.yaml",
           "missing.yaml"]
OUTPUTS = {suffix: ["{out}/out.txt", "{existing}", "{outdir}", f"{{out}}/afile/sub{suffix}"] for suffix in (".onnx", ".pt")}


def _paths(names: list[str]) -> list[str]:
    """File names live in the inputs folder; module:factory and builtin: sources are taken as they are."""
    return [n if n.startswith(("builtin:", "edgekit.", "torchvision:", "no_such")) or n in ("nope",) else "{in}/" + n
            for n in names]


def _options(values: list[str], *names: str) -> st.SearchStrategy[tuple[str, str]]:
    return st.tuples(st.sampled_from(names), st.sampled_from(values))


# Per command: arguments that would work, and mutations that each make them invalid.
def cases() -> dict[str, tuple[list[str], st.SearchStrategy]]:
    inp = "{in}/"
    return {
        "export": (["edgekit.zoo:digits_cnn", "--input-shape", "1,3,32,32", "-o", "{out}/m.onnx"], st.one_of(
            st.tuples(st.just("@0"), st.sampled_from(_paths(SOURCES))),
            _options(BAD_SHAPES, "--input-shape"),
            _options(OUTPUTS[".onnx"], "-o"),
            _options(["-1", "0", "99", "nan"], "--opset"),
            _options(["-1", "0", "nan", "inf", "abc"], "--tolerance"),
            _options(["{", "[1]", '{"width": "x"}', '{"nope": 1}', "null"], "--kwargs"),
            _options([inp + f for f in ("random.pt", "empty.pt", "dir.pt", "missing.pt", "random.npy")], "--weights"),
            _options([inp + f for f in ("random.npy", "vector.npy", "trunc.npy", "missing.npy", "wrongshape.npy")],
                     "--samples"),
        )),
        "inspect": (["{in}/good.onnx"], st.tuples(st.just("@0"), st.sampled_from([inp + f for f in MODEL_FILES]))),
        "prune": (["edgekit.zoo:digits_cnn", "--ratio", "0.5", "--input-shape", "1,3,32,32", "-o", "{out}/p.pt"],
                  st.one_of(
                      st.tuples(st.just("@0"), st.sampled_from(_paths(SOURCES))),
                      _options(BAD_SHAPES, "--input-shape"),
                      _options(["0", "1", "-1", "1e12", "nan", "inf"], "--ratio"),
                      _options(OUTPUTS[".pt"], "-o"),
                      _options(["0", "-1", "nan", "abc"], "--round-to", "--steps"),
                      _options(["nope", "nope.yaml", inp + "random.yaml"], "--target"),
                      _options(["nope"], "--importance"),
                  )),
        "sparsify": (["edgekit.zoo:digits_cnn", "--sparsity", "0.5", "-o", "{out}/s.pt"], st.one_of(
            st.tuples(st.just("@0"), st.sampled_from(_paths(SOURCES))),
            _options(["1", "-1", "1e12", "nan", "inf", "abc"], "--sparsity"),
            _options(OUTPUTS[".pt"] + ["{out}/x.pt2"], "-o"),
        )),
        "quantize": (["{in}/good.onnx", "--backend", "ort", "--calib", "builtin:digits/train", "--recipe", "digits",
                      "--num-samples", "8", "--no-sensitivity", "-o", "{out}/q.onnx"], st.one_of(
            st.tuples(st.just("@0"), st.sampled_from([inp + f for f in MODEL_FILES + ["good.tflite"]])),
            _options(_paths(DATA), "--calib"),
            _options(_paths(RECIPES), "--recipe"),
            _options(ABSURD_INTS[:3] + ["abc"], "--num-samples"),
            _options(OUTPUTS[".onnx"], "-o"),
            _options(["nope", inp + "random.yaml"], "--target"),
            _options(["-1", "nan", "inf", "101"], "--accuracy-budget"),
        )),
        "eval": (["{in}/good.onnx", "--data", "builtin:digits/test", "--recipe", "digits", "--num-samples", "8"],
                 st.one_of(
                     st.tuples(st.just("@0"), st.sampled_from([inp + f for f in MODEL_FILES])),
                     _options(_paths(DATA), "--data"),
                     _options(_paths(RECIPES), "--recipe"),
                     _options([inp + f for f in MODEL_FILES], "--reference"),
                     _options(["0", "-1", "abc", "1e12"], "--num-samples"),
                     _options(["0", "-1", "1000000", "nan"], "--threads"),
                     _options(["{existing}", "{outdir}", "{out}/afile/x.json"], "--json"),
                 )),
        "targets": (["show", "rpi4"], st.one_of(
            st.tuples(st.just("@1"), st.sampled_from(["nope", inp + "random.yaml", inp + "empty.yaml", inp + "list.yaml",
                                                      inp + "dir.yaml", inp + "missing.yaml", inp + "size0.yaml"])),
            _options([inp + "afile", inp + "random.yaml", inp + "missing_dir"], "--targets-dir"),
        )),
        "bench": (["{in}/good.onnx", "--runs", "2", "--warmup", "0"], st.one_of(
            st.tuples(st.just("@0"), st.sampled_from([inp + f for f in MODEL_FILES])),
            _options(["0", "-1", "1e12", "abc", "99999999999"], "--runs"),
            _options(["-1", "1e12", "abc", "99999999999"], "--warmup"),
            _options(["0", "-1", "1000000", "abc"], "--threads"),
            _options(["0", "-1", "nan", "inf", "abc"], "--time-budget", "--timeout"),
            _options(["/nonexistent", inp + "dir.pt", inp + "random.py"], "--python"),
            _options(["{existing}", "{outdir}", "{out}/afile/x.json"], "--json"),
            _options(["{existing}", "{out}/afile/sub"], "--out-dir"),
            _options(["nope", inp + "random.yaml"], "--target"),
            _options(["user@host:notaport", "@", ":22"], "--host"),
        )),
        "report": (["{in}/json_list"], st.tuples(st.just("@0"), st.sampled_from(
            [inp + d for d in ("json_list", "json_noise", "json_nan", "missing_dir", "afile", "nolabels_dir")]))),
        "compare": (["{in}/json_list", "{in}/json_list"], st.one_of(
            st.tuples(st.sampled_from(["@0", "@1"]), st.sampled_from(
                [inp + d for d in ("json_list", "json_noise", "json_nan", "missing_dir", "afile", "nolabels_dir")])),
            _options(["-1", "nan", "inf", "abc"], "--max-slowdown", "--max-metric-drop", "--max-size-growth",
                     "--noise-floor"),
            _options(["{existing}", "{outdir}", "{out}/afile/x.json"], "--json", "--csv", "--junit"),
        )),
        "run": (["{in}/random.yaml"], st.one_of(
            st.tuples(st.just("@0"), st.sampled_from([inp + r for r in ("random.yaml", "empty.yaml", "list.yaml",
                                                                        "dir.yaml", "missing.yaml", "size0.yaml")])),
            _options(["nope", "train,nope", ","], "--only"),
        )),
        "demo": (["--only", "nope"], _options(["nope", "train,nope", "bench,,x"], "--only")),
    }


CASES = cases()
TFLITE_PRONE = {"inspect", "eval", "bench"}


def _apply(base: list[str], mutations: list[tuple[str, str]]) -> list[str]:
    argv = list(base)
    for option, value in mutations:
        if option.startswith("@"):
            argv[int(option[1:])] = value
        elif option in argv:
            argv[argv.index(option) + 1] = value
        else:
            argv += [option, value]
    return argv


def _snapshot(folder: Path) -> dict[str, str]:
    return {str(p.relative_to(folder)): (hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else "dir")
            for p in sorted(folder.rglob("*"))}


def _prepare(world: Path, command: str, argv: list[str], index: int) -> tuple[list[str], Path]:
    out = world / "out" / f"{command}-{index}"
    out.mkdir(parents=True)
    (out / "existing").write_text("keep")
    (out / "afile").write_text("a file")
    mapping = {"{in}": str(world / "in"), "{out}": str(out), "{existing}": str(out / "existing"), "{outdir}": str(out)}
    resolved = []
    for part in argv:
        for key, value in mapping.items():
            part = part.replace(key, value)
        resolved.append(part)
    return [command, *resolved], out


def _call(argv: list[str]) -> tuple[int, str]:
    err = io.StringIO()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(err):
        try:
            code = main(argv)
        except SystemExit as exc:
            code = exc.code if isinstance(exc.code, int) else 2
    return int(code or 0), err.getvalue()


def _check(code: int, stderr: str, argv: list[str]) -> None:
    if os.environ.get("FUZZ_LOG"):
        with open(os.environ["FUZZ_LOG"], "a") as log:
            log.write(f"{code} {' '.join(argv[:1] + [a.rsplit('/', 1)[-1] for a in argv[1:]])} || "
                      f"{(error_lines(stderr) or [''])[-1][:150]}\n")
    if "usage:" in stderr:  # argparse rejected it: its own two-line format, exit 2
        assert code == 2 and "Traceback" not in stderr, (argv, stderr)
        assert [line for line in error_lines(stderr) if ": error: " in line], (argv, stderr)
        return
    try:
        assert_one_line_error(code, stderr)
    except AssertionError as exc:
        raise AssertionError(f"edgekit {' '.join(argv)}: {exc}") from None


_counter = iter(range(1_000_000))


def _mutations(command: str) -> st.SearchStrategy[list[tuple[str, str]]]:
    return st.lists(CASES[command][1], min_size=1, max_size=2, unique_by=lambda m: m[0])


def test_every_command_is_covered() -> None:
    assert set(CASES) == set(COMMANDS)


@pytest.mark.parametrize("command", COMMANDS)
def test_malformed_input_in_process(world: Path, command: str) -> None:
    """Mutated arguments and files, in process; commands that open models get ONNX-side inputs here
    (damaged .tflite files go to a child process below, where a signal is a failure, not a crash)."""
    @settings(SETTINGS, max_examples=12)
    @given(_mutations(command))
    def check(mutations: list[tuple[str, str]]) -> None:
        argv, out = _prepare(world, command, _apply(CASES[command][0], mutations), next(_counter))
        before = _snapshot(out)
        code, stderr = _call(argv)
        _check(code, stderr, argv)
        assert _snapshot(out) == before, f"edgekit {' '.join(argv)} wrote into the output folder"

    check()


@pytest.mark.parametrize("command", sorted(TFLITE_PRONE))
def test_malformed_tflite_in_a_child(world: Path, command: str) -> None:
    """Damaged .tflite files in every position that opens a model; a signal is a failure here."""
    base = CASES[command][0]
    positions = ["@0"] + (["--reference"] if command == "eval" else [])

    @settings(SETTINGS, max_examples=4)
    @given(st.sampled_from(positions), st.sampled_from(TFLITE_FILES))
    def check(position: str, name: str) -> None:
        argv, out = _prepare(world, command, _apply(base, [(position, "{in}/" + name)]), next(_counter))
        before = _snapshot(out)
        proc = run_cli(argv)
        assert proc.returncode >= 0, f"edgekit {' '.join(argv)}: killed by signal {-proc.returncode}"
        _check(proc.returncode, proc.stderr, argv)
        assert _snapshot(out) == before

    check()


@pytest.fixture(autouse=True)
def _quiet_runtimes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TF_CPP_MIN_LOG_LEVEL", "3")
    monkeypatch.delenv("EDGEKIT_DEBUG", raising=False)
    os.environ.setdefault("CUDA_VISIBLE_DEVICES", "")
