"""Screenshots of the web client (docs/WEB.md) in headless Chromium: ``make web-screenshot``.

    python bench/web_screenshot.py [OUT_DIR]      # default docs/images

A real server with the web port, a few users on TCP talking, and the page opened as a
person would use it: the login form, the lobby at a desktop's width, a DM, a room of its
own (docs/PROTOCOL.md §Rooms) with its topic, events and members, the lobby at a phone's
width, and the tab while its server is away ("offline; reconnecting"). Writes
web-login.png, web-desktop.png, web-dm.png, web-rooms.png, web-phone.png and
web-offline.png.
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path[:0] = [str(HERE), str(HERE.parent)]  # report_screenshot alongside; tests.helpers

from report_screenshot import CHROMIUM, CHROMIUM_ARGS, ROOT  # noqa: E402
from tests.helpers import RawClient  # noqa: E402

from chatroom.testing import running_server  # noqa: E402

PASSWORD = "correct horse"
CHAT = [
    ("bob", "morning all. Build 412 is green again"),
    ("carol", "nice. was it the flaky DNS test?"),
    ("bob", "yes: it asked a real resolver. it has its own now"),
    ("alice", "\u0001ACTION brings coffee\u0001"),
    ("carol", "alice: can you look at the web client's phone layout later?"),
]


def _client(address: tuple[str, int], name: str) -> RawClient:
    c = RawClient(address)
    c.login(name, PASSWORD)
    return c


def _rooms_client(address: tuple[str, int], name: str, *rooms: str) -> RawClient:
    """A client speaking rooms (protocol v2), in these rooms."""
    c = RawClient(address)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"])
    c.until("login_ok")
    for room in rooms:
        c.send(command="join", room=room)
        c.until("room_info")
    return c


def _say(c: RawClient, room: str, text: str) -> None:
    c.send(command="pm", room=room, message=text)
    c.until("ack")


def shoot(out: Path) -> list[Path]:
    from playwright.sync_api import sync_playwright

    out.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    with (
        tempfile.TemporaryDirectory() as tmp,
        running_server(Path(tmp) / "web.db", web_port=0, users_interval=0) as srv,
        sync_playwright() as p,
    ):
        bob, carol = _client(srv.address, "bob"), _client(srv.address, "carol")
        _client(srv.address, "alice").close()  # registered, so the page logs in
        browser = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page(viewport={"width": 1100, "height": 640})
            page.set_default_timeout(10_000)
            page.goto(srv.web_url)
            page.wait_for_selector('#status:has-text("log in")')
            page.get_by_label("Username").fill("dora")
            page.get_by_role("button", name="Continue").click()
            page.get_by_label("Choose a password").fill(PASSWORD)
            page.get_by_label("Repeat the password").fill(PASSWORD[:5])
            written.append(out / "web-login.png")
            page.screenshot(path=str(written[-1]))

            page.reload()
            page.wait_for_selector('#status:has-text("log in")')
            page.get_by_label("Username").fill("alice")
            page.get_by_role("button", name="Continue").click()
            page.get_by_label("Password for alice").fill(PASSWORD)
            page.get_by_role("button", name="Log in").click()
            page.wait_for_selector('#status[data-state="online"]')
            for who, text in CHAT:
                if who == "alice":
                    page.locator("#message").fill(f"/me {text[8:-1]}")
                    page.locator("#message").press("Enter")
                    bob.until("broadcast", message=text)
                else:
                    sender = bob if who == "bob" else carol
                    sender.send(command="pm", message=text)
                    sender.until("ack")
                page.locator("#log li.msg[data-seq]").nth(CHAT.index((who, text))).wait_for()
            carol.send(command="dm", to="alice", message="psst: lunch at 1?")
            page.locator("#dms .unread").wait_for()
            page.locator("#message").fill("car")
            page.locator("#message").press("Tab")
            written.append(out / "web-desktop.png")
            page.screenshot(path=str(written[-1]))

            page.locator("#dms button.conv").first.click()
            page.locator("#log li.msg").first.wait_for()
            page.locator("#message").fill("yes! the usual place")
            page.locator("#message").press("Enter")
            carol.until("dm")
            written.append(out / "web-dm.png")
            page.screenshot(path=str(written[-1]))

            for room in ("design", "release"):
                page.locator("#message").fill(f"/join #{room}")
                page.locator("#message").press("Enter")
                page.locator("#conv-title", has_text=f"# {room}").wait_for()
            page.locator("#message").fill("/topic Friday: 1.4 goes out. Changelog first")
            page.locator("#message").press("Enter")
            page.locator("#conv-topic", has_text="Friday").wait_for()
            erin = _rooms_client(srv.address, "erin", "release")
            frank = _rooms_client(srv.address, "frank", "release", "design")
            page.locator("#log li.event", has_text="frank joined").wait_for()
            _say(erin, "release", "changelog is in review, two entries left")
            _say(frank, "release", "I'll tag it after lunch then")
            page.locator("#message").fill("thanks both. frank: ping me when it's tagged")
            page.locator("#message").press("Enter")
            frank.until("broadcast", room="release")
            _say(frank, "design", "mockups for the room list are up")
            page.locator("#rooms .unread").wait_for()
            page.locator("#log li.msg[data-seq]").nth(2).wait_for()
            written.append(out / "web-rooms.png")
            page.screenshot(path=str(written[-1]))

            phone = browser.new_page(viewport={"width": 390, "height": 760})
            phone.set_default_timeout(10_000)
            phone.goto(srv.web_url)
            phone.wait_for_selector('#status:has-text("log in")')
            phone.get_by_label("Username").fill("carol")
            phone.get_by_role("button", name="Continue").click()
            phone.get_by_label("Password for carol").fill(PASSWORD)
            phone.get_by_role("button", name="Log in").click()  # takes carol's session over
            phone.wait_for_selector('#status[data-state="online"]')
            phone.locator("#log li.msg").nth(4).wait_for()
            written.append(out / "web-phone.png")
            phone.screenshot(path=str(written[-1]))

            srv.stop()  # the server goes away: every tab says so, and retries
            page.wait_for_selector('#status[data-state="offline"]')
            written.append(out / "web-offline.png")
            page.screenshot(path=str(written[-1]))
        finally:
            browser.close()
    return written


def main(argv: list[str]) -> int:
    out = Path(argv[0]) if argv else ROOT / "docs" / "images"
    for path in shoot(out):
        print(f"screenshot: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
