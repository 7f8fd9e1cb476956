"""The command line with MQTT targets: bad URL options are one line and exit 2 (for run and
stress alike), and `otfuzz protocols` lists the scheme with its options."""

from __future__ import annotations

from pathlib import Path

import pytest

from otfuzz.cli import main


@pytest.mark.parametrize("query, words", [
    ("version=3", "option version=3 is outside 4..5"),
    ("version=five", "option version='five' is not a valid int"),
    ("topic=a/%23", "option topic='a/#' is not a topic name"),
    ("probe_topic=", "option probe_topic='' is not a topic name"),
    ("keep_alive=-1", "option keep_alive=-1 is outside 0..65535"),
    ("qos=1", "unknown option 'qos'"),
    ("password=x", "option password needs username"),
])
@pytest.mark.parametrize("command", ["run", "stress"])
def test_a_bad_mqtt_option_is_one_line_and_exit_2(capsys, tmp_path: Path, query: str, words: str, command: str) -> None:
    argv = [command, f"mqtt://127.0.0.1:1883?{query}", "--out", str(tmp_path / "r")]
    if command == "run":
        argv += ["--cases", "5"]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("otfuzz: error: mqtt: ") and words in err and "\n" not in err, err
    assert not (tmp_path / "r").exists()


def test_protocols_lists_mqtt_with_its_options_and_liveness(capsys) -> None:
    assert main(["protocols"]) == 0
    out = capsys.readouterr().out
    block = out[out.index("mqtt  (tcp, default port 1883)"):]
    for option in ("?version=4", "?topic=otfuzz/test", "?probe_topic=$otfuzz/probe", "?keep_alive=60", "?username=", "?password="):
        assert option in block
    assert "delivered to a second client" in block
