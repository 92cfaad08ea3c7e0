"""Content-keyed stage cache: a re-run redoes only the stages whose inputs changed.

A stage's key hashes its settings and the bytes of its input artifacts. The record lives in the
run directory, so an interrupted run resumes from the last finished stage, and editing one section
of the pipeline file invalidates exactly the stages that read it (and, through their outputs'
hashes, everything downstream).
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Iterable

from edgekit import __version__
from edgekit.atomic import write_text_atomic
from edgekit.manifest import sha256_file

RECORD_NAME = "stages.json"


class StageCache:
    def __init__(self, run_dir: Path) -> None:
        self.path = run_dir / RECORD_NAME
        self.records: dict[str, Any] = json.loads(self.path.read_text()) if self.path.exists() else {}

    @staticmethod
    def key(settings: Any, inputs: Iterable[Path] = ()) -> str:
        digest = hashlib.sha256()
        digest.update(json.dumps({"edgekit": __version__, "settings": settings}, sort_keys=True, default=str).encode())
        for path in inputs:
            digest.update(path.name.encode())
            digest.update(sha256_file(path).encode())
        return digest.hexdigest()

    def is_fresh(self, stage: str, key: str) -> bool:
        record = self.records.get(stage)
        return bool(record and record["key"] == key and all(Path(p).exists() for p in record["outputs"]))

    def outputs(self, stage: str) -> list[Path]:
        return [Path(p) for p in self.records.get(stage, {}).get("outputs", [])]

    def record(self, stage: str, key: str, outputs: Iterable[Path]) -> None:
        self.records[stage] = {"key": key, "outputs": [str(p) for p in outputs]}
        write_text_atomic(self.path, json.dumps(self.records, indent=2) + "\n", force=True)
