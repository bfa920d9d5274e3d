"""``gc_paused`` stops the cyclic collector for a replay and gives back what it found."""

from __future__ import annotations

import gc

import pytest

from taskpool.stores.jsonl.gc_pause import gc_paused


@pytest.fixture
def collector_state():
    was_enabled = gc.isenabled()
    yield
    if was_enabled:
        gc.enable()
    else:
        gc.disable()


def test_the_collector_rests_inside_and_runs_again_after(collector_state):
    gc.enable()
    with gc_paused():
        assert not gc.isenabled()
    assert gc.isenabled()


def test_a_collector_disabled_before_stays_disabled(collector_state):
    gc.disable()
    with gc_paused():
        assert not gc.isenabled()
    assert not gc.isenabled()


def test_the_collector_runs_again_after_an_error(collector_state):
    gc.enable()
    with pytest.raises(RuntimeError), gc_paused():
        raise RuntimeError("a replay failed")
    assert gc.isenabled()


def test_a_first_start_replays_with_the_collector_paused(tmp_path, collector_state, monkeypatch):
    from taskpool.stores.jsonl import JsonlStore, checkpoint, index

    seen = []
    original = index.PoolIndex.add

    def add(self, *args, **kwargs):
        seen.append(gc.isenabled())
        return original(self, *args, **kwargs)

    writer = JsonlStore(tmp_path, fsync=False)
    writer.post_task(sender="user:ops", to="device:d1", title="reboot")
    writer.close()
    gc.enable()
    monkeypatch.setattr(index.PoolIndex, "add", add)
    assert not (tmp_path / checkpoint.CHECKPOINT_FILE_NAME).exists()  # so it replays
    reader = JsonlStore(tmp_path, fsync=False)
    assert len(reader.pending_for("d1")) == 1
    assert seen == [False]
    assert gc.isenabled()
