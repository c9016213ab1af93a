"""core.progress: a DeviceStage is still the stage text, with the device as a field."""

from __future__ import annotations

from core.progress import DeviceStage


def test_device_stage_reads_as_its_text_and_names_its_device():
    stage = DeviceStage("sending shards to 'mini PC'", "mini PC")
    assert stage == "sending shards to 'mini PC'" and stage.device == "mini PC"
    assert isinstance(stage, str) and str(stage) == stage
    assert stage[:1].upper() + stage[1:] == "Sending shards to 'mini PC'"
