"""A realistic chat user for Locust: reads, talks, replies by DM, idles, leaves and returns.

locust -f bots/examples/locustfile.py --host chat://127.0.0.1:5050
locust -f bots/examples/locustfile.py --host chat://127.0.0.1:5050 --chat-rooms 20 \
    --chat-room-sizes zipf     # the users in 20 rooms: one large, many small
"""

import random

from locust import between, task

from chatroom_bots.locust import ChatUser

LINES = ["hi all", "anyone here?", "brb", "that build is green again", "lunch?", "+1"]


class Chatter(ChatUser):
    wait_time = between(1, 4)  # reading: messages arrive in the background meanwhile

    @task(6)
    def talk(self) -> None:
        self.say(random.choice(LINES))  # to one of the user's rooms, or lobby

    @task(2)
    def reply_by_dm(self) -> None:
        if others := self.others():
            self.chat.dm(random.choice(others), "saw your message, thanks")

    @task(1)
    def leave_and_return(self) -> None:
        self.rejoin()
