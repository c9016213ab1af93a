"""The app's roster is the command line's: one devices.json; older settings move there."""

from __future__ import annotations

from app.devices.roster import SETTINGS_KEY, DeviceRoster
from core.cluster.roster import Roster
from core.cluster.trust import TrustedPeer
from core.comm.curve import Keys


class Settings(dict):
    def get_setting(self, key, default=None):
        return self.get(key, default)

    def set_setting(self, key, value):
        self[key] = value


def test_extras_kept_in_the_app_settings_move_to_the_shared_roster(tmp_path, qtbot):
    key = Keys.generate().public_key
    Roster(tmp_path).trust.add(TrustedPeer(public_key=key, name="mini-pc", role="worker",
                                           address="tcp://10.0.0.2:5000"))
    settings = Settings({SETTINGS_KEY: {key: {"address": "10.0.0.2", "port": 5000,
                                              "control_port": 4000,
                                              "memory_budget": 2**31}}})
    roster = DeviceRoster(settings, tmp_path)
    (spec,) = roster.worker_specs()
    assert (spec.endpoint, spec.memory_budget) == ("tcp://10.0.0.2:4000", 2**31)
    assert settings[SETTINGS_KEY] is None  # moved, not copied
    # the command line reads the same folder
    assert Roster(tmp_path).worker_specs("mini-pc")[0].endpoint == "tcp://10.0.0.2:4000"
    with qtbot.waitSignal(roster.changed):
        roster.remove(key)
    assert Roster(tmp_path).devices() == []
