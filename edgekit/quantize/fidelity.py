"""Does the INT8 model compute what its FP32 model does? Measured after every quantization.

Both models run through :func:`edgekit.runtime.open_runner` (the runner eval and bench use: it
handles int8 I/O and NHWC) on samples the calibration did not see, and are compared by the mean
per-sample cosine of their float outputs and the top-1 agreement (argmax equality).

The threshold (cosine >= 0.99, and agreement >= 97% where more than one of the samples flips):
measured here, a faithful INT8 sits well above it: the digits CNN 0.9999 and 100% agreement for
both ORT and TFLite (50 held-out images), torchvision ResNet-18 (random weights, BatchNorm
statistics set on 224x224 images) 0.9990 and 100%. The cases users must hear about sit below it:
MobileNet-V2 set up the same way 0.976 (0.953 in issue 12), hardswish/SE networks 0.75-0.98, and a
conv net with one outlier activation channel 0.982. 0.99 separates the two groups with room on
both sides; agreement is the figure a user with labels feels, and 97% allows one flip in 32.
"""
from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Any

import numpy as np

from edgekit.errors import EdgekitError
from edgekit.tasks import get_task

MIN_COSINE = 0.99
MIN_AGREEMENT = 97.0  # %
HOLDOUT = 64          # held-out samples at most
MIN_HOLDOUT = 4       # fewer calibration samples than 4x this: measure on the calibration samples themselves
FLOAT_NOISE = 1e-6    # relative input noise the size of float32 rounding after one layer's sums (Check.float_spread)
MARGIN = 0.05  # points of shortfall a remedy must win to be kept: noise-level gains are not worth a change


@dataclasses.dataclass(frozen=True)
class Fidelity:
    cosine: float
    agreement: float   # % of samples whose argmax equals FP32's
    samples: int
    source: str        # "held-out", "eval data", "calibration" (too few samples to hold any out) or "random"
                       # (a mode without calibration given no images: seeded random inputs)
    kind: str = "top-1"  # what agrees: top-1 (classification), detection (same confident boxes), pixel

    @property
    def flips(self) -> int:
        return round((100.0 - self.agreement) * self.samples / 100.0)

    @property
    def agreement_ok(self) -> bool:
        """One flip is the measurement's resolution on a few dozen samples (1 in 32 is 96.9%), not a verdict."""
        return self.agreement >= MIN_AGREEMENT or self.flips <= 1

    @property
    def ok(self) -> bool:
        return self.cosine >= MIN_COSINE and self.agreement_ok

    def shortfall(self) -> float:
        """How far below the threshold, in points (0 when met): ranks candidates that all miss it."""
        return max(self.cosine_shortfall(), 0.0 if self.agreement_ok else MIN_AGREEMENT - self.agreement)

    def improves_on(self, other: "Fidelity", margin: float = MARGIN) -> bool:
        """Whether a remedy with this fidelity is worth keeping over ``other``: a shortfall lower by
        ``margin`` points, where two agreements closer than their sampling noise (two standard errors
        of a difference of two proportions on these samples) count as equal and the cosine decides.
        Why: on a few dozen images one flip moves agreement by 2-3 points, and where FP32's top two
        logits are close (random-weight nets: ResNet-18 at cosine 0.9975 agreed on 87.5%) a candidate
        with the far better cosine (EfficientNet-B0's TFLite 0.696 -> 0.916) read as worse on 2 images in 32
        (18.8% -> 6.2%); on 128 other images the same two models agreed on 10.9% and 12.5%."""
        proportions = self.kind == other.kind == "top-1"  # detection/pixel agreement is not a count of samples
        if proportions and abs(self.agreement - other.agreement) <= agreement_noise(self, other):
            return self.cosine_shortfall() < other.cosine_shortfall() - margin
        return self.shortfall() < other.shortfall() - margin

    def cosine_shortfall(self) -> float:
        return max(0.0, (MIN_COSINE - self.cosine) * 100)

    def as_dict(self) -> dict[str, Any]:
        return {"cosine": round(self.cosine, 6), "agreement": round(self.agreement, 2), "samples": self.samples,
                "source": self.source, "ok": self.ok, **({} if self.kind == "top-1" else {"agreement_of": self.kind})}

    def line(self) -> str:
        where = {"held-out": "held-out images", "eval data": "--eval images", "random": "random inputs"}.get(self.source, "calibration images")
        return (f"fidelity vs FP32 on {self.samples} {where}: cosine {self.cosine:.4f}, "
                f"{self.kind} agreement {self.agreement:.1f}%")

    def warning(self, advice: str, what: str = "INT8") -> str | None:
        """The warning line's text below the threshold, naming the figure that missed it."""
        if self.ok:
            return None
        missed = []
        if self.cosine < MIN_COSINE:
            missed.append(f"output cosine {self.cosine:.4f} < {MIN_COSINE}")
        if not self.agreement_ok:
            missed.append(f"{self.kind} agreement {self.agreement:.1f}% < {MIN_AGREEMENT:g}%")
        return f"{what} is not faithful to FP32: {' and '.join(missed)} on {self.samples} images; {advice}"


def agreement_noise(a: Fidelity, b: Fidelity) -> float:
    """Two standard errors, in points, of the difference of two agreements measured on these samples."""
    samples = max(1, min(a.samples, b.samples))
    rate = (a.agreement + b.agreement) / 200.0
    return 200.0 * math.sqrt(2.0 * rate * (1.0 - rate) / samples)


def split_holdout(calib: np.ndarray, seed: int = 0) -> tuple[np.ndarray, np.ndarray | None]:
    """(calibration tensors, held-out tensors): a seeded slice of at most ``HOLDOUT`` items, a
    quarter at most; None when there are too few to spare any (then fidelity uses the calibration)."""
    count = min(HOLDOUT, len(calib) // 4)
    if count < MIN_HOLDOUT:
        return calib, None
    held = np.zeros(len(calib), dtype=bool)
    held[np.random.default_rng(seed).choice(len(calib), size=count, replace=False)] = True
    return calib[~held], calib[held]


def samples_for(calib: np.ndarray, holdout: np.ndarray | None) -> tuple[np.ndarray, np.ndarray, str]:
    """(tensors to calibrate on, tensors to measure fidelity on, their source): ``holdout`` (the
    ``--eval`` data) when given, else a held-out slice of ``calib``, else ``calib`` itself."""
    if holdout is not None and len(holdout):
        return calib, holdout, "eval data"
    used, held = split_holdout(calib)
    return (used, held, "held-out") if held is not None else (calib, calib, "calibration")


class Check:
    """Fidelity of any INT8 candidate against one FP32 model, whose outputs are computed once (on the
    first candidate, so that a reference that cannot be computed fails where a measurement is asked)."""

    def __init__(self, fp32: str | Path, samples: np.ndarray, source: str, threads: int | None = None,
                 task: str = "classification") -> None:
        self.fp32, self.samples, self.source, self.threads, self.task = Path(fp32), samples, source, threads, task
        self._reference: np.ndarray | None = None
        self._spread: float | None = None
        self.measured: dict[tuple[Path, tuple[tuple[str, Any], ...]], Fidelity] = {}

    @property
    def reference(self) -> np.ndarray:
        if self._reference is None:
            self._reference = predict(self.fp32, self.samples, self.threads)
        return self._reference

    def float_spread(self) -> float:
        """The FP32 model's output cosine to itself with float32-rounding-sized noise (``FLOAT_NOISE``
        relative) on its input: how far two right float implementations of it can drift apart. About 1.0
        for a trained net; a random-weight net that amplifies noise drifts far (EfficientNet-B4 at 128
        px: 0.983, close to ORT's own optimised against unoptimised graph, 0.987)."""
        if self._spread is None:
            noise = np.random.default_rng(0).standard_normal(self.samples.shape)
            noisy = (self.samples * (1.0 + FLOAT_NOISE * noise)).astype(np.float32)
            self._spread = get_task(self.task).fidelity_pair(predict(self.fp32, noisy, self.threads), self.reference)[0]
        return self._spread

    def __call__(self, int8: str | Path, **runner_options: Any) -> Fidelity:
        """``runner_options`` go to the INT8 model's runner (``delegate="none"``: TFLite's builtin kernels)."""
        key = (Path(int8), tuple(sorted(runner_options.items())))
        if key not in self.measured:
            self.measured[key] = measure(self.fp32, key[0], self.samples, self.source, self.threads, self.reference,
                                         self.task, **runner_options)
        return self.measured[key]


def second_opinion(check: Check, int8: str | Path, first: Fidelity | None, gap: float,
                   **runner_options: Any) -> Fidelity | None:
    """The INT8 model measured again through other kernels (``runner_options``: ``delegate="none"``), only
    when ``first`` missed the threshold, so a faithful model pays nothing; returned when they gain at
    least ``gap`` cosine points, else None (a measurement that fails included: a diagnosis must not
    cost a quantization that succeeded)."""
    if first is None or first.ok:
        return None
    try:
        other = check(int8, **runner_options)
    except Exception:  # noqa: BLE001
        return None
    return other if other.cosine - first.cosine >= gap else None


def measure(fp32: str | Path, int8: str | Path, samples: np.ndarray, source: str = "held-out",
            threads: int | None = None, reference: np.ndarray | None = None, task: str = "classification",
            **runner_options: Any) -> Fidelity:
    """``int8`` against ``fp32`` on float NCHW ``samples``; ``reference``: FP32's outputs already computed;
    ``task`` says what agreement means (:meth:`edgekit.tasks.Task.fidelity_pair`); ``runner_options``
    go to the INT8 model's runner (``delegate="none"``: TFLite's builtin kernels)."""
    ref = reference if reference is not None else predict(fp32, samples, threads)
    out = predict(int8, samples, threads, **runner_options)
    if ref.shape != out.shape:
        raise EdgekitError(f"{int8}: output shape {list(out.shape)} differs from FP32's {list(ref.shape)}; "
                           "fidelity not measured")
    scorer = get_task(task)
    cosine, agreement = scorer.fidelity_pair(out, ref)
    return Fidelity(cosine, agreement, int(len(samples)), source, scorer.agreement_kind)


def predict(path: str | Path, samples: np.ndarray, threads: int | None = None, **runner_options: Any) -> np.ndarray:
    """The first output of ``path`` on float NCHW ``samples`` (the runner converts layout and dtype)."""
    from edgekit.runtime import open_runner

    return open_runner(str(path), threads, **runner_options).predict(np.ascontiguousarray(samples, dtype=np.float32))
