"""The manifest: sha256 of every bundled file under data/, so a test can prove nothing drifted."""
import hashlib
import json
from pathlib import Path

from .files import DATA_DIR

MANIFEST = "MANIFEST.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def bundled_files(data_dir: Path = DATA_DIR) -> list[Path]:
    return sorted(p for p in Path(data_dir).rglob("*") if p.is_file() and p.name != MANIFEST)


def compute_manifest(data_dir: Path = DATA_DIR) -> dict[str, str]:
    return {p.relative_to(data_dir).as_posix(): sha256(p) for p in bundled_files(data_dir)}


def write_manifest(data_dir: Path = DATA_DIR) -> Path:
    path = Path(data_dir) / MANIFEST
    path.write_text(json.dumps(compute_manifest(data_dir), indent=1, sort_keys=True) + "\n")
    return path


def read_manifest(data_dir: Path = DATA_DIR) -> dict[str, str]:
    return json.loads((Path(data_dir) / MANIFEST).read_text())
