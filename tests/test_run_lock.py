"""One writer per run: two processes training the same config, a dead holder, --no-wait, evaluation caches."""
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

import ctcbook.runs as runs
from ctcbook.config import TrainConfig
from ctcbook.runs import RunLockedError, RunStore, append_jsonl, read_jsonl
from ctcbook.train import train

REPO = Path(__file__).resolve().parents[1]
TINY = TrainConfig(source_classes=[0, 1], train_size=150, epochs=2, width=4, depth=8, batch_size=50, seed=5)


def _spawn(args, log: Path) -> subprocess.Popen:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.Popen([sys.executable, *args], cwd=REPO, env=env, stdout=open(log, "w"),
                            stderr=subprocess.STDOUT)


def _wait_for(predicate, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.2)


def test_two_processes_train_one_run_once(tmp_path):
    """Two `ctcbook train` of the same config, started while the run is locked, so both must contend: one trains,
    the other waits (saying who holds the lock) and reuses the finished run; `--no-wait` refuses at once."""
    cfg = tmp_path / "tiny.json"
    cfg.write_text(json.dumps(TINY.to_dict()))
    store = RunStore(tmp_path / "runs")
    run = store.open(TINY.to_dict(), prefix=TINY.run_prefix)
    logs = [tmp_path / f"p{i}.log" for i in range(3)]
    cmd = ["-m", "ctcbook", "train", "--config", str(cfg), "--runs", str(store.root), "--device", "cpu"]
    with run.writer():
        procs = [_spawn(cmd, logs[0]), _spawn(cmd, logs[1])]
        refused = _spawn(cmd + ["--no-wait"], logs[2])
        assert refused.wait(timeout=300) == 1
        assert f"being trained by process {os.getpid()}" in logs[2].read_text()
        _wait_for(lambda: all("waiting for it to finish" in p.read_text() or q.poll() is not None
                              for p, q in zip(logs, procs)), 300, "both trainers to wait")
        assert all(q.poll() is None for q in procs), [p.read_text() for p in logs]
    assert [q.wait(timeout=300) for q in procs] == [0, 0], [p.read_text() for p in logs]
    paths = {p.read_text().strip().splitlines()[-1] for p in logs[:2]}
    assert paths == {str(run.path)}
    assert [r["epoch"] for r in run.metrics()] == [1, 2]
    single = train(TINY, store=RunStore(tmp_path / "single"), progress=False, device="cpu")
    a, b = single.load_checkpoint(2), run.load_checkpoint(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert [r["test_acc"] for r in single.metrics()] == [r["test_acc"] for r in run.metrics()]


def test_dead_holder_never_blocks(tmp_path):
    store = RunStore(tmp_path)
    run = store.open({"x": 1})
    script = ("import sys, time; from ctcbook.runs import RunStore; run = RunStore(sys.argv[1]).open({'x': 1});\n"
              "with run.writer():\n    print('held', flush=True); time.sleep(120)")
    log = tmp_path / "holder.log"
    holder = _spawn(["-c", script, str(tmp_path)], log)
    try:
        _wait_for(lambda: "held" in log.read_text(), 300, "the holder to take the lock")
        with pytest.raises(RunLockedError, match=f"process {holder.pid} on "):
            with run.writer(wait=False):
                pass
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    with run.writer(wait=False):  # the OS dropped the dead process's lock
        assert run.holder()["pid"] == os.getpid()


def test_eval_cache_appends_stay_one_row_per_key(tmp_path, monkeypatch):
    """Concurrent writers each append epochs 1..8; a slowed read widens the read-check-append window."""
    real = runs.read_jsonl

    def slow_read(path):
        rows = real(path)
        time.sleep(0.01)
        return rows

    monkeypatch.setattr(runs, "read_jsonl", slow_read)
    path = tmp_path / "evals" / "transfer-x.jsonl"

    def writer(tag):
        for epoch in range(1, 9):
            append_jsonl(path, {"epoch": epoch, "by": tag}, unique=("epoch",))

    threads = [threading.Thread(target=writer, args=(t,)) for t in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(r["epoch"] for r in read_jsonl(path)) == list(range(1, 9))
    assert append_jsonl(path, {"epoch": 3, "by": 9}, unique=("epoch",)) is False
    assert append_jsonl(path, {"epoch": 3, "by": 9}) is True  # without a key: a plain append
