"""The enrolled devices, shared by the app and the command line through the data folder."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from core.cluster.identity import load_or_create
from core.cluster.peer_info import PeerInfo
from core.cluster.roster import DEFAULT_BUDGET, Roster
from core.cluster.trust import TrustedPeer
from core.comm.curve import Keys
from core.errors import TpiError


def _pair(roster: Roster, name: str, address: str = "10.0.0.2",
          control_port: int = 4000) -> str:
    """What pair_with + enroll leave behind for a worker called `name`."""
    key = Keys.generate().public_key
    roster.trust.add(TrustedPeer(public_key=key, name=name, role="worker",
                                 address=f"tcp://{address}:5000"))
    peer = PeerInfo(name=name, address=address, port=5000, version=1, fingerprint="",
                    mem_total=0, mem_free=0, cores=1, platform="linux", paired=True,
                    control_port=control_port)
    roster.enroll(key, peer, 3 * 2**30)
    return key


def test_enrolled_devices_survive_a_new_roster_on_the_same_folder(tmp_path):
    load_or_create(tmp_path)
    key = _pair(Roster(tmp_path), "mini-pc")
    again = Roster(tmp_path)  # e.g. the CLI after the app paired it
    (dev,) = again.devices()
    assert (dev.name, dev.public_key, dev.memory_budget) == ("mini-pc", key, 3 * 2**30)
    assert dev.control_endpoint == "tcp://10.0.0.2:4000"
    (spec,) = again.worker_specs("all")
    assert spec.endpoint == dev.control_endpoint and spec.memory_budget == 3 * 2**30


def test_selecting_devices_by_name_and_the_errors_a_user_can_act_on(tmp_path):
    r = Roster(tmp_path)
    _pair(r, "mini-pc")
    _pair(r, "board", "10.0.0.3", 0)  # never told us its control port
    assert [s.name for s in r.worker_specs("all")] == ["mini-pc"]
    assert r.worker_specs("none") == []
    assert [s.name for s in r.worker_specs("mini-pc")] == ["mini-pc"]
    with pytest.raises(TpiError, match="no paired device is called 'laptop'.*'mini-pc'"):
        r.worker_specs("mini-pc,laptop")
    with pytest.raises(TpiError, match="'board' never told this computer its control port"):
        r.worker_specs("board")


def test_a_damaged_or_huge_devices_file_keeps_the_paired_keys(tmp_path):
    r = Roster(tmp_path)
    key = _pair(r, "mini-pc")
    r.path.write_text("{not json")
    (dev,) = r.devices()
    assert dev.public_key == key and dev.memory_budget == 0
    assert r.worker_specs("all") == []  # no control port known any more
    r.path.write_text(json.dumps({key: {"address": "x" * (2 << 20)}}))
    assert r.devices()[0].address == ""


def test_unpairing_forgets_key_and_extras_and_address_updates_are_saved(tmp_path):
    r = Roster(tmp_path)
    key = _pair(r, "mini-pc")
    dev = r.devices()[0]
    moved = PeerInfo(name="mini-pc", address="10.0.0.9", port=5001, version=1,
                     fingerprint=dev.fingerprint, mem_total=0, mem_free=0, cores=1,
                     platform="linux", paired=True, control_port=4001)
    assert not r.update_address(moved, lambda d: False)  # not proven: not saved
    assert Roster(tmp_path).get(key).control_endpoint != "tcp://10.0.0.9:4001"
    assert r.update_address(moved, lambda d: True) and not r.update_address(moved, bool)
    assert Roster(tmp_path).get(key).control_endpoint == "tcp://10.0.0.9:4001"
    assert r.remove(key)
    assert r.devices() == [] and key not in json.loads(r.path.read_text())


def test_extras_the_app_kept_in_its_settings_are_imported_once(tmp_path):
    r = Roster(tmp_path)
    key = _pair(r, "mini-pc")
    r.path.unlink()
    r.import_extras({key: {"address": "10.1.1.1", "port": 1, "control_port": 2,
                           "memory_budget": 5}, "junk": 3})
    dev = r.get(key)
    assert (dev.address, dev.control_port, dev.memory_budget) == ("10.1.1.1", 2, 5)
    assert dev.spec().memory_budget == 5
    r.import_extras({key: {"memory_budget": 0}})  # already known: the saved entry wins
    assert r.get(key).memory_budget == 5
    r.save(replace(dev, memory_budget=0))  # never chosen: a session lends the default
    assert r.get(key).spec().memory_budget == DEFAULT_BUDGET
