"""Training at scale: configuration-bound resume, device/precision options, and torchrun data parallelism.

Every path runs for real on the CPU (gloo, bf16 autocast, fp16 + GradScaler, channels_last, loader
workers, the teacher cache); the torchrun test launches real processes and kills a real process group.
"""
from __future__ import annotations

import contextlib
import copy
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekit.cli import main
from edgekit.errors import EdgekitError
from edgekit.manifest import read_manifest
from edgekit.prune import prune

ROOT = Path(__file__).resolve().parent.parent
QUIET = {"progress": False, "log": lambda _: None}


def _small(width: int = 8) -> torch.nn.Module:
    from edgekit.zoo import digits_cnn

    torch.manual_seed(0)
    return digits_cnn(width=width)


def _train(model: torch.nn.Module, log: list[str], **options) -> dict:
    from edgekit.distill import train

    return train(model, "builtin:digits/val", "digits", progress=False, log=log.append, device="cpu", **options)


def test_checkpoint_loads_weights_only_and_resumes_after_a_real_interruption(tmp_path: Path) -> None:
    def stop_after_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    from edgekit.distill import train

    with pytest.raises(KeyboardInterrupt):
        train(_small(), "builtin:digits/val", "digits", epochs=2, checkpoint_dir=tmp_path, progress=False,
              log=stop_after_first_epoch, device="cpu")
    state = torch.load(tmp_path / "last.pt", weights_only=True)  # plain data only: no code runs on load
    assert state["epoch"] == 0 and '"lr": 0.003' in state["config"]
    messages: list[str] = []
    history = _train(_small(), messages, epochs=2, checkpoint_dir=tmp_path)
    assert any(m.startswith("resumed from") for m in messages)
    assert [e["epoch"] for e in history["epochs"]] == [1, 2]
    assert sum(m.startswith("epoch ") for m in messages) == 1  # only epoch 2 ran


def test_a_resumed_training_ends_with_the_weights_of_an_uninterrupted_one(tmp_path: Path) -> None:
    """Resume after epoch 1 of 3: the shuffle of epochs 2-3 and the dropout masks are what an uninterrupted
    run draws (a shuffle seeded once replayed epoch 1's order after a resume: different weights)."""
    from edgekit.distill import train

    def with_dropout() -> torch.nn.Module:
        return torch.nn.Sequential(_small(), torch.nn.Dropout(0.3))

    def stop_after_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/3"):
            raise KeyboardInterrupt

    whole = with_dropout()
    _train(whole, [], epochs=3)
    resumed = with_dropout()
    with pytest.raises(KeyboardInterrupt):
        train(resumed, "builtin:digits/val", "digits", epochs=3, checkpoint_dir=tmp_path, progress=False,
              log=stop_after_first_epoch, device="cpu")
    messages: list[str] = []
    _train(resumed, messages, epochs=3, checkpoint_dir=tmp_path)
    assert any(m.startswith("resumed from") for m in messages)
    expected, got = whole.state_dict(), resumed.state_dict()
    assert all(torch.equal(expected[name], got[name]) for name in expected)


def test_a_changed_learning_rate_trains_from_the_start(tmp_path: Path) -> None:
    _train(_small(), [], epochs=1, checkpoint_dir=tmp_path)
    messages: list[str] = []
    history = _train(_small(), messages, epochs=1, lr=1e-3, checkpoint_dir=tmp_path)
    assert [m for m in messages if "not resuming" in m] == [
        f"not resuming from {tmp_path / 'last.pt'}: written for another configuration (lr 0.003 -> 0.001); "
        "training from the start"]
    assert not any(m.startswith("resumed") for m in messages) and len(history["epochs"]) == 1
    assert any(m.startswith("epoch 1/1") for m in messages)  # it really trained
    assert '"lr": 0.001' in torch.load(tmp_path / "last.pt", weights_only=True)["config"]  # and replaced it


def test_a_changed_prune_ratio_trains_from_the_start_without_a_traceback(tmp_path: Path) -> None:
    example = torch.zeros(1, 3, 32, 32)
    half, quarter = _small(16), _small(16)
    prune(half, example, ratio=0.5, progress=None)
    prune(quarter, example, ratio=0.25, progress=None)
    _train(half, [], epochs=1, checkpoint_dir=tmp_path)
    messages: list[str] = []
    _train(quarter, messages, epochs=1, checkpoint_dir=tmp_path)
    assert any("another configuration (student parameter shapes)" in m for m in messages), messages
    assert quarter(example).shape == (1, 10)


def test_unreadable_or_old_checkpoints_are_ignored_with_one_line(tmp_path: Path) -> None:
    (tmp_path / "last.pt").write_bytes(b"not a checkpoint")
    messages: list[str] = []
    _train(_small(), messages, epochs=1, checkpoint_dir=tmp_path)
    assert any("cannot be read safely" in m for m in messages)
    torch.save({"model": {}, "epoch": 0, "history": []}, tmp_path / "last.pt")  # 0.1.0 kept no record
    messages.clear()
    _train(_small(), messages, epochs=1, checkpoint_dir=tmp_path)
    assert any("has no configuration record" in m for m in messages)


def test_cpu_speed_options_all_run_and_report_throughput() -> None:
    """bf16 autocast, fp16 with a GradScaler, channels_last, loader workers and the teacher cache, on the CPU."""
    teacher = _small().eval()
    for options in ({"amp": True, "channels_last": True, "workers": 1, "cache_teacher": True},
                    {"amp": True, "amp_dtype": "fp16"}):
        student = copy.deepcopy(teacher)
        history = _train(student, [], teacher=teacher, epochs=2, val_source="builtin:digits/val", **options)
        assert history["amp"] == ("fp16" if options.get("amp_dtype") else "bf16")
        assert history["channels_last"] == bool(options.get("channels_last"))
        assert history["cache_teacher"] == bool(options.get("cache_teacher"))
        record = history["epochs"][-1]
        assert record["images_per_s"] > 0 and record["epoch_time_s"] > 0 and record["eta_s"] == 0
        assert history["epochs"][0]["eta_s"] > 0 and np.isfinite(record["loss"])
        assert next(student.parameters()).is_contiguous() and student(torch.zeros(1, 3, 32, 32)).shape == (1, 10)
        assert next(teacher.parameters()).device.type == "cpu"


def test_the_teacher_cache_gives_the_same_training() -> None:
    teacher = _small().eval()
    students = [copy.deepcopy(teacher), copy.deepcopy(teacher)]
    for student, cache in zip(students, (False, True)):
        _train(student, [], teacher=teacher, epochs=2, cache_teacher=cache)
    for a, b in zip(students[0].state_dict().values(), students[1].state_dict().values()):
        torch.testing.assert_close(a, b, rtol=1e-4, atol=1e-5)


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has a GPU")
def test_device_cuda_without_a_gpu_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = tmp_path / "out.pt"
    assert main(["prune", "edgekit.zoo:digits_cnn", "--ratio", "0.5", "--distill", "--train", "builtin:digits/val",
                 "--recipe", "digits", "--device", "cuda", "-o", str(out)]) == 2
    err = capsys.readouterr().err
    assert "--device cuda: no CUDA GPU is available" in err and err.count("\n") == 1 and not out.exists()


def test_more_processes_than_samples_is_one_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.distill import train

    np.savez(tmp_path / "two.npz", x=np.zeros((2, 3, 32, 32), np.float32), y=np.array([0, 1]))
    monkeypatch.setenv("WORLD_SIZE", "4")
    monkeypatch.setenv("RANK", "0")
    with pytest.raises(EdgekitError, match="2 training samples cannot be shared by 4 processes"):
        train(_small(), str(tmp_path / "two.npz"), "digits", device="cpu", **QUIET)


def test_a_rank_that_cannot_reach_the_others_fails_in_seconds(monkeypatch: pytest.MonkeyPatch) -> None:
    from edgekit.distill import train

    with socket.socket() as s:  # a port nobody listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    for key, value in {"WORLD_SIZE": "2", "RANK": "1", "LOCAL_RANK": "1", "MASTER_ADDR": "127.0.0.1",
                       "MASTER_PORT": str(port), "EDGEKIT_DIST_INIT_TIMEOUT": "2"}.items():
        monkeypatch.setenv(key, value)
    start = time.monotonic()
    with pytest.raises(EdgekitError, match=r"rank 1 of 2: cannot reach the other ranks at 127.0.0.1:\d+ within 2 s"):
        train(_small(), "builtin:digits/val", "digits", device="cpu", **QUIET)
    assert time.monotonic() - start < 60
    assert not torch.distributed.is_initialized()


def _torchrun(args: list[str], env: dict[str, str]) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", "2",
                             "--master-port", str(_free_port()), "-m", "edgekit", *args], cwd=ROOT, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _rank_pid(agent: int, rank: int) -> int:
    """The worker process torchrun started for ``rank`` (from its environment)."""
    for child in _children(agent):
        if f"RANK={rank}".encode() in Path(f"/proc/{child}/environ").read_bytes().split(b"\0"):
            return child
    raise AssertionError(f"no rank {rank} under torchrun {agent}")


def _kill_job(job: subprocess.Popen) -> None:
    """torchrun starts each worker in a session of its own: end them by id, then torchrun's group."""
    for child in _children(job.pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(child, signal.SIGKILL)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_torchrun_two_processes_match_one_and_resume_after_a_kill(digits_cnn_model: torch.nn.Module,
                                                                  tmp_path: Path) -> None:
    """gloo on the CPU: rank 0 alone writes, a killed job resumes from epoch 1, top-1 within 1 point of one process."""
    torch.save(digits_cnn_model, tmp_path / "teacher.pt")
    common = [str(tmp_path / "teacher.pt"), "--ratio", "0.5", "--distill", "--train", "builtin:digits/train",
              "--val", "builtin:digits/val", "--recipe", "digits", "--epochs", "3", "--device", "cpu"]
    assert main(["prune", *common, "-o", str(tmp_path / "one.pt")]) == 0
    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYTHONUNBUFFERED": "1", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "two.pt"
    job = _torchrun(["prune", *common, "-o", str(out)], env)
    lines = []
    try:
        for line in job.stdout:  # once epoch 1's checkpoint is on disk, rank 1 dies (SIGKILL)
            lines.append(line)
            if line.startswith("epoch 1/3"):
                os.kill(_rank_pid(job.pid, 1), signal.SIGKILL)
                break
        lines.append(job.communicate(timeout=120)[0])  # torchrun sees the dead rank and ends rank 0
    finally:
        _kill_job(job)
    assert job.returncode != 0
    assert any(line.startswith("epoch 1/3") for line in lines), "".join(lines)
    checkpoints = tmp_path / "two.pt.checkpoints"
    assert sorted(p.name for p in checkpoints.iterdir()) == ["last.pt"] and not out.exists()
    assert torch.load(checkpoints / "last.pt", weights_only=True)["epoch"] == 0
    job = _torchrun(["prune", *common, "-o", str(out)], env)
    text, _ = job.communicate(timeout=300)
    assert job.returncode == 0, text
    assert "resumed from" in text and "epoch 2/3" in text and "epoch 1/3" not in text, text
    assert text.count(f"wrote {out}") == 1 and text.count("training on cpu x 2 process(es)") == 1  # rank 0 only
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith("two")) == [
        "two.pt", "two.pt.checkpoints", "two.pt.json"]
    one, two = (read_manifest(tmp_path / name)["stages"][-1] for name in ("one.pt", "two.pt"))
    assert two["processes"] == 2 and one["processes"] == 1
    assert [e["epoch"] for e in two["history"]] == [1, 2, 3] and two["history"][-1]["images_per_s"] > 0
    assert abs(one["best_val_top1"] - two["best_val_top1"]) <= 1.0, (one["best_val_top1"], two["best_val_top1"])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_amp_channels_last_cache_and_resume(tmp_path: Path) -> None:
    """On a GPU: bf16 (default) or fp16 + GradScaler, channels_last, workers, the cache, resume onto the GPU."""
    from edgekit.distill import train

    def stop_after_first_epoch(line: str) -> None:
        if line.startswith("epoch 1/2"):
            raise KeyboardInterrupt

    teacher = _small().eval()
    for amp_dtype in (None, "fp16"):
        student, messages = copy.deepcopy(teacher), []
        options = {"teacher": teacher, "epochs": 2, "device": "cuda", "workers": 2, "cache_teacher": True,
                   "amp_dtype": amp_dtype, "checkpoint_dir": tmp_path / str(amp_dtype), "progress": False}
        with pytest.raises(KeyboardInterrupt):
            train(student, "builtin:digits/val", "digits", log=stop_after_first_epoch, **options)
        history = train(student, "builtin:digits/val", "digits", log=messages.append, **options)
        assert any(m.startswith("resumed from") for m in messages) and len(history["epochs"]) == 2
        expected = amp_dtype or ("bf16" if torch.cuda.is_bf16_supported() else "fp16")
        assert history["amp"] == expected and history["channels_last"] and history["device"].startswith("cuda")
        assert np.isfinite(history["epochs"][-1]["loss"]) and history["epochs"][-1]["images_per_s"] > 0
        assert next(student.parameters()).device.type == "cpu" and next(teacher.parameters()).device.type == "cpu"
