"""The ``bot_tester`` pytest fixture (registered as the ``chatroom_bots`` pytest plugin).

::

    def test_roll(bot_tester):
        tester = bot_tester(make_bot())   # a BotTester, started; closed after the test
        tester.say("alice", "!roll 2 6")
        assert tester.expect_reply().text.startswith("alice rolled")

``bot_tester(bot, **options)`` takes :class:`chatroom_bots.testing.BotTester`'s options
(``server=``, ``clock=``, ``timeout=``, server settings such as ``max_message=``). Nothing
is imported until a test asks for the fixture.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from chatroom_bots.core import BotBase
    from chatroom_bots.testing import BotTester


@pytest.fixture
def bot_tester() -> Iterator[Callable[..., BotTester]]:
    """A factory: ``bot_tester(bot)`` runs ``bot`` against a test server for this test."""
    from chatroom_bots.testing import BotTester

    testers: list[BotTester] = []

    def make(bot: BotBase, **options: Any) -> BotTester:
        tester = BotTester(bot, **options).start()
        testers.append(tester)
        return tester

    yield make
    for tester in reversed(testers):
        tester.close()
