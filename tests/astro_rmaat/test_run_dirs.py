"""Run directories: checked before work, locked while a process runs in them, removed when
a user error stops a run this process started; numbers in messages read as numbers."""

from __future__ import annotations

import json

import numpy as np
import pytest

from astro_rmaat import runs
from astro_rmaat.errors import ConfigError, OutputError, RunBusyError, RunExistsError, show


def test_check_out_dir_creates_nothing_and_refuses_what_cannot_be_a_run(tmp_path):
    out = tmp_path / "a" / "b" / "run"
    assert runs.check_out_dir(out) == out
    assert list(tmp_path.iterdir()) == []                    # the probe left nothing
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="is not a directory"):
        runs.check_out_dir(tmp_path / "file" / "run")
    with pytest.raises(RunExistsError, match="not a directory"):
        runs.check_out_dir(tmp_path / "file")
    (tmp_path / "done").mkdir()
    (tmp_path / "done" / runs.META_FILE).write_text("{}")
    with pytest.raises(RunExistsError, match="finished run"):
        runs.check_out_dir(tmp_path / "done")


def test_lock_is_held_until_finish_and_reentrant_in_one_process(tmp_path):
    out = tmp_path / "run"
    runs.prepare_run_dir(out, {"a": 1})
    holder = (out / runs.LOCK_FILE).read_text().split()
    assert holder[0].isdigit()                               # the holder's pid, for refusals
    runs.prepare_run_dir(out, {"a": 1})                      # same process: a resume, allowed
    runs.finish_run(out, {"stage": "test"})
    assert not (out / runs.LOCK_FILE).exists()
    assert sorted(p.name for p in out.iterdir()) == [runs.CONFIG_FILE, runs.META_FILE]


def test_a_free_field_may_change_on_resume_and_is_left_out_of_the_refusal(tmp_path):
    """Fields named ``free`` change no number a run writes: a resume may change them (and
    config.json records the new value), and a refusal names the field that does differ."""
    out = tmp_path / "run"
    runs.prepare_run_dir(out, {"a": 1, "workers": 0})
    runs.prepare_run_dir(out, {"a": 1, "workers": 2}, free=("workers",))
    assert json.loads((out / runs.CONFIG_FILE).read_text()) == {"a": 1, "workers": 2}
    with pytest.raises(RunExistsError, match=r"different config \(a: stored 1, given 2\)"):
        runs.prepare_run_dir(out, {"a": 2, "workers": 3}, free=("workers",))
    with pytest.raises(RunExistsError, match=r"different config \(workers: stored 2, given 3\)"):
        runs.prepare_run_dir(out, {"a": 1, "workers": 3})    # not free unless named


def test_refused_config_releases_the_lock(tmp_path):
    out = tmp_path / "run"
    runs.prepare_run_dir(out, {"a": 1})
    runs.release_run_dir(out)
    with pytest.raises(RunExistsError, match=r"different config \(a: stored 1, given 2\)"):
        runs.prepare_run_dir(out, {"a": 2})
    assert runs._HELD == {} or out.resolve() not in runs._HELD
    assert json.loads((out / runs.CONFIG_FILE).read_text()) == {"a": 1}


def test_discard_removes_only_new_unfinished_directories(tmp_path):
    old = tmp_path / "old"
    runs.prepare_run_dir(old, {"a": 1})                      # created by this process ...
    runs._CREATED.pop(old.resolve())                         # ... but say an earlier one did
    new = tmp_path / "x" / "y" / "new"
    runs.prepare_run_dir(new, {"a": 1})
    done = tmp_path / "done"
    runs.prepare_run_dir(done, {"a": 1})
    runs.finish_run(done, {"stage": "test"})
    removed = runs.discard_new_unfinished()
    assert removed == [tmp_path / "x"]                       # the topmost folder it created
    assert old.is_dir() and done.is_dir() and not (tmp_path / "x").exists()
    runs.release_run_dir(old)


def test_busy_error_names_the_holder(tmp_path):
    out = tmp_path / "run"
    out.mkdir()
    (out / runs.LOCK_FILE).write_text("4242 somehost\n")
    assert runs._lock_holder(out / runs.LOCK_FILE) == "pid 4242 on somehost"
    assert issubclass(RunBusyError, RunExistsError)


@pytest.mark.parametrize("value, text", [(np.float64(5.0), "5"), (np.int64(3), "3"),
                                         (9377.107236540392, "9377.11"), (np.float32(0.1), "0.1"),
                                         (float("nan"), "nan"), ("a", "'a'"), (True, "True")])
def test_show_prints_numbers_for_people(value, text):
    assert show(value) == text


def test_a_stored_config_reads_as_today_s_before_it_is_compared(tmp_path):
    """``stored`` fills what an older version did not write; what it cannot read differs."""
    out = tmp_path / "run"
    runs.prepare_run_dir(out, {"a": 1})
    runs.release_run_dir(out)
    runs.prepare_run_dir(out, {"a": 1, "b": 0}, stored=lambda d: {"b": 0, **d})
    runs.release_run_dir(out)
    assert json.loads((out / runs.CONFIG_FILE).read_text()) == {"a": 1, "b": 0}

    def unreadable(d):
        raise ConfigError("no longer reads")
    with pytest.raises(RunExistsError, match=r"c: absent from the stored config, given 2"):
        runs.prepare_run_dir(out, {"a": 1, "b": 0, "c": 2}, stored=unreadable)
    assert runs.config_difference({"m": {"x": [1, 2]}}, {"m": {"x": [1, 3]}}) == "m.x: stored [1, 2], given [1, 3]"
