"""Verified files and recovery: SHA-256 sidecars, state.prev.pt fallback, `ctcbook check`, disk trouble."""
import errno
import hashlib
import json
import os
import shutil

import pytest
import torch

import ctcbook.runs as runs
from ctcbook.book.cli import main
from ctcbook.config import TrainConfig
from ctcbook.runs import DamagedFileError, RunStore, StoreWriteError, checksum_path
from ctcbook.train import train

TINY = TrainConfig(source_classes=[0, 1], train_size=150, epochs=3, width=4, depth=8, batch_size=50, seed=7)


@pytest.fixture(scope="module")
def full_run(tmp_path_factory):
    """One uninterrupted 3-epoch run, the reference for every test here (copied before damaging it)."""
    return train(TINY, store=RunStore(tmp_path_factory.mktemp("full")), progress=False, device="cpu")


def _copy(run, tmp_path):
    shutil.copytree(run.path, tmp_path / "store" / run.name)
    store = RunStore(tmp_path / "store")
    return store, store.open(TINY.to_dict(), prefix=TINY.run_prefix)


def _interrupted(tmp_path, after: int):
    """A run of TINY stopped after epoch ``after`` (its state.pt is that epoch, state.prev.pt the one before)."""
    def stop(epoch, model, run):
        if epoch == after:
            raise KeyboardInterrupt

    store = RunStore(tmp_path / "partial")
    with pytest.raises(KeyboardInterrupt):
        train(TINY, store=store, progress=False, device="cpu", on_epoch_end=stop)
    return store, store.open(TINY.to_dict(), prefix=TINY.run_prefix)


def _same_result(a, b):
    assert [r["test_acc"] for r in a.metrics()] == [r["test_acc"] for r in b.metrics()]
    wa, wb = a.load_checkpoint(3), b.load_checkpoint(3)
    assert all(torch.equal(wa[k], wb[k]) for k in wa)


def test_every_checkpoint_and_state_has_a_matching_sidecar(full_run):
    for path in [*(full_run.checkpoint_path(e) for e in (1, 2, 3)), full_run.state_path, full_run.prev_state_path]:
        sidecar = json.loads(checksum_path(path).read_text())
        assert hashlib.sha256(path.read_bytes()).hexdigest() == sidecar["sha256"]
    assert full_run.damaged_files() == []


def test_flipped_byte_is_named_by_load_and_by_check(full_run, tmp_path, capsys):
    store, run = _copy(full_run, tmp_path)
    path = run.checkpoint_path(2)
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match=rf"run {run.name}: checkpoints/e0002.pt \(epoch 2\) is damaged: "
                                               r"SHA-256 .* Re-create it with: mv .* ctcbook train --config"):
        run.load_checkpoint(2)
    run.load_checkpoint(1)  # the others still load
    assert main(["check", "--runs", str(store.root)]) == 1
    out = capsys.readouterr().out
    assert f"DAMAGED run {run.name}: checkpoints/e0002.pt (epoch 2)" in out and "1 damaged file(s)" in out
    assert "e0001" not in out and "e0003" not in out


def test_run_folders_without_sidecars_still_load(full_run, tmp_path, capsys):
    store, run = _copy(full_run, tmp_path)
    for side in run.path.rglob("*.sha256"):
        side.unlink()
    assert run.load_checkpoint(3).keys() == full_run.load_checkpoint(3).keys()
    assert run.load_state()["epoch"] == 3
    assert main(["check", "--runs", str(store.root)]) == 0
    assert "all intact" in capsys.readouterr().out


def test_truncated_state_falls_back_to_the_previous_one_and_finishes_identically(full_run, tmp_path):
    store, run = _interrupted(tmp_path, after=2)
    assert run.load_state()["epoch"] == 2 and torch.load(run.prev_state_path, weights_only=False)["epoch"] == 1
    with open(run.state_path, "r+b") as f:  # a copy cut short / a full disk
        f.truncate(1000)
    fell_back = r"state.pt \(epoch 2\) is damaged \(SHA-256 .*\); resuming from state.prev.pt \(epoch 1\)"
    with pytest.warns(UserWarning, match=fell_back):
        resumed = train(TINY, store=store, progress=False, device="cpu")
    assert [r["epoch"] for r in resumed.metrics()] == [1, 2, 3]
    _same_result(full_run, resumed)


def test_truncated_state_without_sidecar_is_unreadable_not_a_traceback(tmp_path):
    store, run = _interrupted(tmp_path, after=1)  # only one resume point: nothing to fall back to
    checksum_path(run.state_path).unlink()
    with open(run.state_path, "r+b") as f:
        f.truncate(1000)
    with pytest.raises(DamagedFileError, match=rf"run {run.name}: state.pt is damaged: unreadable"):
        train(TINY, store=store, progress=False, device="cpu")


def _fail_on(monkeypatch, name: str, err: int):
    """Make the fsync of the first file whose name contains ``name`` fail with ``err`` (data written, not saved)."""
    real = os.fsync

    def fsync(fd):
        if name in os.readlink(f"/proc/self/fd/{fd}"):
            raise OSError(err, os.strerror(err))
        return real(fd)

    monkeypatch.setattr(runs.os, "fsync", fsync)


@pytest.mark.parametrize("victim", ["e0002.pt", "metrics.jsonl", ".state.pt."])
def test_full_disk_mid_run_loses_no_finished_epoch(full_run, tmp_path, monkeypatch, victim):
    store = RunStore(tmp_path / "disk")
    calls = {"n": 0}

    def fill_disk_in_epoch_2(epoch, model, run):
        calls["n"] += 1
        if epoch == 1:
            _fail_on(monkeypatch, victim, errno.ENOSPC)

    with pytest.raises(StoreWriteError, match=r"cannot write .* in .*/disk/.*: No space left on device; free some"):
        train(TINY, store=store, progress=False, device="cpu", on_epoch_end=fill_disk_in_epoch_2)
    monkeypatch.undo()
    run = store.open(TINY.to_dict(), prefix=TINY.run_prefix)
    # Epoch 1 is intact; with the state write failing, epoch 2's row and checkpoint exist but no resume point does.
    assert not run.done and run.load_state()["epoch"] == 1 and [r["epoch"] for r in run.metrics()][:1] == [1]
    assert [r["epoch"] for r in run.metrics()] == ([1, 2] if victim == ".state.pt." else [1])
    assert run.damaged_files() == [] and not list(run.path.rglob("*.tmp"))
    resumed = train(TINY, store=store, progress=False, device="cpu")
    _same_result(full_run, resumed)


def test_read_only_runs_folder_names_the_folder(tmp_path, monkeypatch, capsys):
    cfg = tmp_path / "tiny.json"
    cfg.write_text(runs.json.dumps(TINY.to_dict()))
    root = tmp_path / "ro"
    root.mkdir()
    if os.geteuid() == 0:  # root writes through permissions: make the file system say read-only instead
        real = runs.tempfile.mkstemp

        def mkstemp(*a, dir=None, **k):
            if str(dir).startswith(str(root)):
                raise OSError(errno.EROFS, os.strerror(errno.EROFS))
            return real(*a, dir=dir, **k)

        monkeypatch.setattr(runs.tempfile, "mkstemp", mkstemp)
    else:
        root.chmod(0o555)
    try:
        assert main(["train", "--config", str(cfg), "--runs", str(root), "--device", "cpu"]) == 1
    finally:
        root.chmod(0o755)
    err = capsys.readouterr().err
    assert f"cannot write config.json in {root}/" in err and "writable" in err
