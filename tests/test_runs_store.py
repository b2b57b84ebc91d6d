"""The run store's guarantees, tested through its public functions only: an atomic write either replaces the file
whole (by rename: a new file, the old one untouched) or leaves the old file and nothing else behind; bumping
CODE_VERSION renames every run."""
from __future__ import annotations

import os

import pytest
import torch

import ctcbook.runs as runs
from ctcbook.config import TrainConfig
from ctcbook.runs import RunStore, atomic_torch_save, atomic_write_bytes, atomic_write_json, config_hash

OLD = b"old contents\n" * 100


def _files(folder):
    return sorted(p.name for p in folder.rglob("*"))


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "store" / "state.pt"
    path.parent.mkdir()
    path.write_bytes(OLD)
    return path


def test_atomic_write_replaces_the_file_by_rename(target):
    # A reader holding the old file (an open handle, or a hard link = the same inode) keeps reading the old bytes:
    # the new contents go to a new file that is renamed over the path, never into the old file.
    link = target.parent / "reader-link"
    os.link(target, link)
    with open(target, "rb") as reader:
        atomic_write_bytes(target, b"new")
        assert reader.read() == OLD
    assert target.read_bytes() == b"new"
    assert link.read_bytes() == OLD
    assert not os.path.samefile(target, link)


@pytest.mark.parametrize("fail_in", ["write", "fsync"])
def test_failed_atomic_write_keeps_the_old_file_and_leaves_no_temporary(target, monkeypatch, fail_in):
    before = _files(target.parent)
    if fail_in == "fsync":
        def broken_fsync(fd):
            raise OSError(28, "No space left on device (simulated)")
        monkeypatch.setattr(os, "fsync", broken_fsync)
        data = b"new contents that never reach the disk"
    else:
        data = "text, not bytes: the write itself raises TypeError"
    with pytest.raises((OSError, TypeError)):
        atomic_write_bytes(target, data)
    monkeypatch.undo()
    assert target.read_bytes() == OLD
    assert _files(target.parent) == before


def test_failed_torch_save_and_json_keep_the_old_file(target):
    class Unpicklable:
        def __reduce__(self):
            raise RuntimeError("cannot pickle")

    before = _files(target.parent)
    with pytest.raises(RuntimeError):
        atomic_torch_save({"w": Unpicklable()}, target)
    with pytest.raises(TypeError):
        atomic_write_json(target, {"not json": object()})
    assert target.read_bytes() == OLD and _files(target.parent) == before
    atomic_torch_save({"w": torch.arange(3)}, target)
    assert torch.equal(torch.load(target, weights_only=True)["w"], torch.arange(3))


def test_atomic_write_creates_missing_folders(tmp_path):
    path = tmp_path / "a" / "b" / "c.json"
    atomic_write_json(path, {"x": 1})
    assert path.read_text().strip() == '{\n  "x": 1\n}'
    assert _files(tmp_path / "a") == ["b", "c.json"]


CONFIGS = [TrainConfig(epochs=3, seed=s, lr=lr).to_dict() for s in (0, 1) for lr in (0.1, 0.05)]


def test_bumping_code_version_renames_every_run(tmp_path, monkeypatch):
    before = [config_hash(c) for c in CONFIGS] + [config_hash({"probe": "knn", "k": 20})]
    folders = [RunStore(tmp_path).open(c).path.name for c in CONFIGS]
    assert len(set(before)) == len(before)
    monkeypatch.setattr(runs, "CODE_VERSION", runs.CODE_VERSION + 1)
    after = [config_hash(c) for c in CONFIGS] + [config_hash({"probe": "knn", "k": 20})]
    assert all(a != b for a, b in zip(before, after)), "a run hash ignores CODE_VERSION"
    new_folders = [RunStore(tmp_path).open(c).path.name for c in CONFIGS]
    assert not set(folders) & set(new_folders)
    monkeypatch.undo()
    assert [config_hash(c) for c in CONFIGS] + [config_hash({"probe": "knn", "k": 20})] == before
