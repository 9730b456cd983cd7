"""Bots on the chatroom SDK: the :class:`Bot` layer, echo, greeter, and ``chat-bot``."""

from chatroom_bots.bot import BadArguments, Bot, Command, Message
from chatroom_bots.echo import make_echo
from chatroom_bots.greeter import make_greeter

__all__ = ["BadArguments", "Bot", "Command", "Message", "make_echo", "make_greeter"]
