"""manifest.json: round trip, refusal of broken files, listing, and a torch-free import for serving."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from exports import errors
from exports.errors import ExportError
from exports.manifest import list_manifests, read_manifest, scan_manifests, write_manifest


def test_manifest_round_trips(tiny_export: Path, tmp_path: Path) -> None:
    manifest = read_manifest(tiny_export)
    copy = tmp_path / "tiny"
    copy.mkdir()
    write_manifest(copy, manifest)
    assert read_manifest(copy) == manifest


def test_missing_manifest_is_reported(tmp_path: Path) -> None:
    with pytest.raises(ExportError) as caught:
        read_manifest(tmp_path)
    assert caught.value.code == errors.MANIFEST_INVALID


def test_malformed_manifest_is_reported(tmp_path: Path) -> None:
    (tmp_path / "manifest.json").write_text('{"alias": 3}')
    with pytest.raises(ExportError) as caught:
        read_manifest(tmp_path)
    assert caught.value.code == errors.MANIFEST_INVALID
    assert "manifest.json" in caught.value.message


def test_listing_skips_and_reports_broken_folders(
    tiny_export: Path, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    models_dir = tmp_path / "models"
    models_dir.mkdir()
    good = models_dir / "tiny"
    good.mkdir()
    write_manifest(good, read_manifest(tiny_export))
    (models_dir / "half").mkdir()
    (models_dir / ".tiny.tmp-1234").mkdir()  # an export in progress: neither listed nor reported
    renamed = models_dir / "renamed"
    renamed.mkdir()
    write_manifest(renamed, read_manifest(tiny_export))

    manifests, broken = scan_manifests(models_dir)
    assert [manifest.alias for manifest in manifests] == ["tiny"]
    assert sorted(item.path.name for item in broken) == ["half", "renamed"]

    assert [manifest.alias for manifest in list_manifests(models_dir)] == ["tiny"]
    assert "half" in caplog.text


def test_listing_a_missing_folder_is_empty(tmp_path: Path) -> None:
    assert list_manifests(tmp_path / "absent") == []


def test_reading_manifests_never_imports_torch(tiny_export: Path) -> None:
    code = (
        "import sys\n"
        "from pathlib import Path\n"
        "import exports\n"
        "from exports.default_source import default_source_path\n"
        "import exports.command\n"
        f"exports.read_manifest(Path({str(tiny_export)!r}))\n"
        "default_source_path()\n"
        "heavy = [name for name in ('torch', 'transformers', 'optimum') if name in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    subprocess.run([sys.executable, "-c", code], check=True, cwd=Path(__file__).parents[2])
