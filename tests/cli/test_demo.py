"""The demo's bots, started as ``make demo`` and ``make cluster-demo`` start them."""

from __future__ import annotations

import subprocess
from pathlib import Path

from chatroom import ChatClient, DirectMessage, UsersChanged
from chatroom_cli.demo import _stop, bot_command, start_bots
from tests.cluster.conftest import Cluster, cluster, pg_url, redis_prefix  # noqa: F401
from tests.helpers import PASSWORD

T = 30.0  # a bot's start (an interpreter and its imports) and a node's death (2 s)


def test_each_bot_starts_on_its_node_with_the_others_to_fail_over_to() -> None:
    db = Path("demo.db")
    assert bot_command("echo", 0, [5050], db)[-4:] == [
        "--host",
        "127.0.0.1:5050",
        "--db",
        "demo.db",
    ]
    hosts = [
        bot_command(b, i, [5050, 5051, 5052], db)[5] for i, b in enumerate(("echo", "greeter"))
    ]
    assert hosts == [
        "127.0.0.1:5051,127.0.0.1:5052,127.0.0.1:5050",  # not on the REPL's node first
        "127.0.0.1:5052,127.0.0.1:5050,127.0.0.1:5051",
    ]


def test_the_cluster_demo_echo_bot_comes_back_when_its_node_is_killed(
    cluster: Cluster,  # noqa: F811
    tmp_path: Path,
) -> None:
    """The echo bot's node is SIGKILLed; the bot resumes on another node and answers
    again (given only its node's address, it never came back)."""
    repl_node, echo_node, greeter_node = cluster.add(), cluster.process(), cluster.process()
    ports = [repl_node.port, echo_node.port, greeter_node.port]
    procs: list[subprocess.Popen[bytes]] = []
    with open(tmp_path / "demo.log", "ab") as log, ChatClient(*repl_node.address) as me:
        me.login("visitor", PASSWORD)
        try:
            with me.expect(UsersChanged, check=lambda e: {"echo", "greeter"} <= set(e.users)) as up:
                assert start_bots(ports, tmp_path / "demo.db", log, procs) == ["echo", "greeter"]
                up.wait(T)
            with me.expect(DirectMessage, check=lambda e: e.message == "before") as echoed:
                me.dm("echo", "before")
                echoed.wait(T)
            echo_node.proc.kill()  # SIGKILL
            with me.expect(DirectMessage, check=lambda e: e.message == "after") as echoed:
                me.dm("echo", "after")  # stored now, answered once echo is back
                assert echoed.wait(T).sender == "echo"
        finally:
            _stop(procs)
