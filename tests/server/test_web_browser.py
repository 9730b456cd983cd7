"""The web client in a real browser (docs/WEB.md): Debian's Chromium driven by Playwright,
as tests/bots/test_report_browser.py does. Two browser users, an SDK client over TCP and
an IRC client in one room; a tab that loses its server (killed, restarted) and resumes
with nothing missing and nothing twice; registering, a wrong password, a message over
the limit; history on scroll-up; the keyboard and a phone's width.

Every page refuses and counts any request to a host other than the server's, and fails
the test on a console error. ``make test`` installs Chromium; without it these fail in
CI (CI=true) and are skipped, with the reason, elsewhere.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from chatroom import Broadcast, ChatClient, DirectMessage
from chatroom.testing import ServerProcess
from tests.helpers import PASSWORD, RawClient, connect, quiet_server
from tests.server.test_irc import Irc

CHROMIUM = os.environ.get("CHROMIUM", "/usr/bin/chromium")
# As bench/report_screenshot.py: headless, as root, and no calls home.
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
T = 10_000  # ms: Playwright's waits
# connection.js: the longest wait before a reconnect (10 s, plus a quarter of jitter).
RECONNECT_MAX = 12_500  # ms

pytestmark = pytest.mark.timeout(120)


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    if not os.access(CHROMIUM, os.X_OK):
        message = f"{CHROMIUM} is missing: `make test` installs Debian's chromium"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        b = p.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            yield b
        finally:
            b.close()


class Tab:
    """One browser tab (its own context: no shared storage) on the web client."""

    def __init__(self, browser: Any, url: str, width: int = 1100, height: int = 750) -> None:
        self.url = url
        self.context = browser.new_context(viewport={"width": width, "height": height})
        self.page = self.context.new_page()
        self.page.set_default_timeout(T)
        self.problems: list[str] = []
        self.foreign: list[str] = []
        self.allowed: list[re.Pattern[str]] = []  # console errors a test expects
        origin = url.rstrip("/")
        self.page.route(lambda u: not u.startswith(origin), self._refuse)
        self.page.on("pageerror", lambda e: self.problems.append(f"page error: {e}"))
        self.page.on(
            "console",
            lambda m: self.problems.append(f"console: {m.text}") if m.type == "error" else None,
        )
        self.page.goto(url)

    def _refuse(self, route: Any) -> None:
        self.foreign.append(route.request.url)
        route.abort()

    def close(self) -> None:
        self.context.close()

    def check_clean(self) -> None:
        assert self.foreign == [], self.foreign  # nothing asked of another host
        problems = [p for p in self.problems if not any(a.search(p) for a in self.allowed)]
        assert problems == [], problems

    # ------------------------------------------------------------ login
    def start_login(self, name: str) -> None:
        self.page.get_by_label("Username").fill(name)
        self.page.get_by_role("button", name="Continue").click()

    def register(self, name: str, password: str = PASSWORD) -> None:
        self.start_login(name)
        self.page.get_by_label("Choose a password").fill(password)
        self.page.get_by_label("Repeat the password").fill(password)
        self.page.get_by_role("button", name="Register").click()
        self.wait_online()

    def login(self, name: str, password: str = PASSWORD) -> None:
        self.start_login(name)
        self.page.get_by_label(f"Password for {name}").fill(password)
        self.page.get_by_role("button", name="Log in").click()
        self.wait_online()

    def wait_online(self) -> None:
        self.page.wait_for_selector('#status[data-state="online"]')

    # ------------------------------------------------------------ chat
    def say(self, text: str) -> None:
        box = self.page.locator("#message")
        box.fill(text)
        box.press("Enter")

    def wait_message(self, text: str) -> None:
        self.page.locator("#log li.msg", has_text=text).first.wait_for()

    def open(self, title: str) -> None:
        self.page.locator("#sidebar button.conv", has_text=title).click()

    def write_to(self, name: str) -> None:
        self.page.get_by_role("button", name=f"Write to {name}").click()

    def log(self) -> list[tuple[int | None, str]]:
        """(seq, text) of every message shown in the open conversation."""
        rows: list[tuple[int | None, str]] = self.page.eval_on_selector_all(
            "#log li.msg",
            "els => els.map(e => [e.dataset.seq ? Number(e.dataset.seq) : null,"
            " e.querySelector('.text').textContent])",
        )
        return [(seq, text) for seq, text in rows]

    def texts(self) -> list[str]:
        return [text for _, text in self.log()]


@pytest.fixture
def tabs(browser: Any) -> Iterator[list[Tab]]:
    opened: list[Tab] = []
    yield opened
    for tab in opened:
        try:
            tab.check_clean()
        finally:
            tab.close()


def open_tab(browser: Any, tabs: list[Tab], url: str, **size: int) -> Tab:
    tab = Tab(browser, url, **size)
    tabs.append(tab)
    return tab


def test_browsers_tcp_and_irc_in_one_room_messages_and_dms_all_ways(
    browser: Any, tabs: list[Tab]
) -> None:
    with quiet_server(web_port=0, irc_port=0) as srv:
        alice = open_tab(browser, tabs, srv.web_url)
        alice.register("alice")
        bob = open_tab(browser, tabs, srv.web_url)
        bob.register("bob")
        carol = ChatClient(srv.host, srv.port)
        carol.connect()
        try:
            carol.login("carol", PASSWORD)
            dave = Irc(srv.server.irc_addresses[0])
            dave.register("dave")
            try:
                for tab in (alice, bob):
                    for name in ("alice", "bob", "carol", "dave"):
                        tab.page.get_by_role("button", name=f"Write to {name}").wait_for()

                # Public: each of the four to the other three.
                with carol.expect(Broadcast, check=lambda e: e.message == "hi from alice") as w:
                    alice.say("hi from alice")
                    w.wait(10)
                bob.wait_message("hi from alice")
                assert (
                    dave.until("PRIVMSG") == ":alice!alice@chatroom PRIVMSG #lobby :hi from alice"
                )
                with carol.expect(Broadcast, check=lambda e: e.message == "hi from bob") as w:
                    bob.say("hi from bob")
                    w.wait(10)
                alice.wait_message("hi from bob")
                assert dave.until("PRIVMSG").endswith("PRIVMSG #lobby :hi from bob")
                carol.pm("hi from carol")
                dave.send("PRIVMSG #lobby :hi from dave")
                for tab in (alice, bob):
                    tab.wait_message("hi from carol")
                    tab.wait_message("hi from dave")
                assert dave.until("PRIVMSG").endswith("PRIVMSG #lobby :hi from carol")

                # Direct: alice to each, and each back to alice.
                with carol.expect(DirectMessage) as w:
                    alice.say("/msg carol psst carol")
                    assert w.wait(10).message == "psst carol"
                alice.say("/msg dave psst dave")
                assert dave.until("PRIVMSG").endswith("PRIVMSG dave :psst dave")
                alice.write_to("bob")
                alice.say("psst bob")
                bob.page.locator("#dms button.conv .unread").wait_for()
                bob.open("@ alice")
                bob.wait_message("psst bob")
                bob.say("back to alice from bob")
                carol.dm("alice", "back from carol")
                dave.send("PRIVMSG alice :back from dave")
                alice.open("@ bob")
                alice.wait_message("back to alice from bob")
                alice.open("@ carol")
                alice.wait_message("back from carol")
                assert alice.texts() == ["psst carol", "back from carol"]
                alice.open("@ dave")
                alice.wait_message("back from dave")
                # A DM stays between its two: the lobby shows none of them.
                bob.open("# lobby")
                lobby = bob.texts()
                assert lobby == ["hi from alice", "hi from bob", "hi from carol", "hi from dave"]
            finally:
                dave.close()
        finally:
            carol.close()


def test_a_tab_resumes_after_its_server_is_killed_and_restarted(
    browser: Any, tabs: list[Tab], tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    first = ServerProcess(db, "--web-port", "0", "--rate-limit", "off")
    assert first.web_port is not None
    ports = ["--port", str(first.port), "--web-port", str(first.web_port)]
    url = f"http://127.0.0.1:{first.web_port}/"
    try:
        tab = open_tab(browser, tabs, url)
        # The tab's timers on a clock the test moves (below); time still flows.
        tab.page.clock.install()
        # Chromium's own report of each attempt while the server is down.
        tab.allowed.append(re.compile(r"WebSocket connection to .* failed"))
        tab.register("alice")
        bob = connect(first.address, "bob")
        bob.send(command="pm", message="before the crash")
        bob.expect("ack")
        tab.wait_message("before the crash")
        first.proc.kill()  # SIGKILL: no bye, no close frame
        first.close()
        tab.page.wait_for_selector('#status[data-state="offline"]')
        assert "offline; reconnecting" in tab.page.locator("#status").inner_text()
        assert "when last online" in (tab.page.locator("#member-count").text_content() or "")
        tab.say("typed while offline")
        second = ServerProcess(db, *ports, "--rate-limit", "off")
        try:
            bob = connect(second.address, "bob")
            # The tab gets back in whenever it does: its user list push and its resent
            # message may reach bob before or between his acks, so keep what comes first.
            early: list[dict[str, Any]] = []

            def acked() -> None:
                while (frame := bob.recv())["type"] != "ack":
                    early.append(frame)

            for i in range(3):
                bob.send(command="pm", message=f"while away {i}")
                acked()
            # The tab's next attempt may be up to RECONNECT_MAX away: the longer the
            # restart took (a loaded machine), the longer its backoff had grown, past
            # Playwright's wait. Skip the rest of it: the timer that is due fires now.
            tab.page.clock.fast_forward(RECONNECT_MAX)
            tab.wait_online()
            got = [f for f in early if f["type"] == "broadcast"] or [bob.until("broadcast")]
            assert [f["message"] for f in got] == ["typed while offline"]
            tab.wait_message("while away 2")
            bob.send(command="pm", message="after the return")
            acked()
            tab.wait_message("after the return")
            tab.page.wait_for_selector("#log li.msg.pending", state="detached")
            log = tab.log()
            # Nothing missing, nothing twice, in seq order. Where the message typed
            # offline falls among bob's depends on when the tab got back in: its seq says.
            expected = [
                "before the crash",
                *[f"while away {i}" for i in range(3)],
                "typed while offline",
                "after the return",
            ]
            texts = [text for _, text in log]
            assert sorted(texts) == sorted(expected), log
            seqs = [seq for seq, _ in log if seq is not None]
            assert len(seqs) == len(log) and seqs == sorted(set(seqs)), log
        finally:
            second.close()
    finally:
        first.close()


def test_registering_a_wrong_password_and_a_message_over_the_limit(
    browser: Any, tabs: list[Tab]
) -> None:
    with quiet_server(web_port=0, max_message=50) as srv:
        tab = open_tab(browser, tabs, srv.web_url)
        tab.start_login("alice")
        tab.page.get_by_label("Choose a password").fill(PASSWORD)
        tab.page.get_by_label("Repeat the password").fill(PASSWORD + "!")
        tab.page.get_by_role("button", name="Register").click()
        assert "differ" in tab.page.get_by_role("alert").first.inner_text()
        tab.page.get_by_label("Choose a password").fill("short")
        tab.page.get_by_label("Repeat the password").fill("short")
        tab.page.get_by_role("button", name="Register").click()
        assert "at least 8" in tab.page.locator("#login-error").inner_text()
        tab.page.get_by_label("Choose a password").fill(PASSWORD)
        tab.page.get_by_label("Repeat the password").fill(PASSWORD)
        tab.page.get_by_role("button", name="Register").click()
        tab.wait_online()

        other = open_tab(browser, tabs, srv.web_url)
        other.start_login("alice")
        assert other.page.locator("#confirm-row").is_hidden()  # an existing name: once
        other.page.get_by_label("Password for alice").fill("not the password")
        other.page.get_by_role("button", name="Log in").click()
        error = other.page.locator("#login-error")
        error.filter(has_text=re.compile("password", re.I)).wait_for()
        assert other.page.locator("#chat-view").is_hidden()

        watcher = connect(srv.address, "bob")
        tab.say("x" * 51)
        assert "51 characters" in tab.page.locator("#composer-error").inner_text()
        assert tab.page.locator("#message").input_value() == "x" * 51  # kept, not lost
        tab.say("y" * 50)
        assert watcher.until("broadcast")["message"] == "y" * 50  # the first to arrive
        tab.page.wait_for_selector("#log li.msg[data-seq]")
        assert tab.texts() == ["y" * 50]


def test_history_loads_when_scrolling_up(browser: Any, tabs: list[Tab]) -> None:
    with quiet_server(web_port=0) as srv:
        bob = connect(srv.address, "bob")
        for i in range(120):
            bob.send(command="pm", message=f"old {i:03}", id=i)
        bob.until("ack", id=119)
        tab = open_tab(browser, tabs, srv.web_url)
        tab.register("alice")
        tab.wait_message("old 119")
        assert len(tab.log()) == 50
        for _ in range(10):
            if tab.page.locator("#log-start").is_visible():
                break
            shown = len(tab.log())  # before the scroll: its page may come at once
            tab.page.locator("#log-scroll").evaluate("e => { e.scrollTop = 0; }")
            tab.page.wait_for_function(
                "n => document.querySelectorAll('#log li.msg').length > n"
                " || !document.querySelector('#log-start').hidden",
                arg=shown,
            )
        texts = tab.texts()
        assert texts == [f"old {i:03}" for i in range(120)]


def test_keyboard_only_tab_completion_and_a_phone_width(browser: Any, tabs: list[Tab]) -> None:
    with quiet_server(web_port=0) as srv:
        connect(srv.address, "bobby_tables")
        tab = open_tab(browser, tabs, srv.web_url, width=390, height=800)
        page = tab.page
        # A keyboard user waits, as anyone does, for the page to say it is connected: before
        # that, Enter only says "not connected yet" (on a loaded machine, for a while).
        page.wait_for_selector('#status[data-state="connecting"]')
        page.keyboard.type("alice")  # the username field has the focus at load
        page.keyboard.press("Enter")
        page.get_by_label("Choose a password").wait_for()
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Tab")
        page.keyboard.type(PASSWORD)
        page.keyboard.press("Enter")
        tab.wait_online()
        # The composer has the focus; Tab completes a name at the start of the line.
        page.keyboard.type("bob")
        page.keyboard.press("Tab")
        assert page.locator("#message").input_value() == "bobby_tables: "
        page.keyboard.type("hello")
        page.keyboard.press("Enter")
        tab.wait_message("bobby_tables: hello")
        # With nothing to complete, Tab moves on: nobody is trapped in the input.
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "me-button"
        # At a phone's width the side lists are panels behind buttons.
        assert page.locator("#sidebar").is_hidden()
        page.get_by_role("button", name="Members").click()
        assert page.locator("#members-panel").is_visible()
        page.keyboard.press("Escape")
        assert page.locator("#members-panel").is_hidden()
        # A room, by the keyboard, at a phone's width: the join form is in the panel.
        page.locator("#toggle-sidebar").focus()
        page.keyboard.press("Enter")
        assert page.evaluate("document.activeElement.textContent") == "# lobby"
        page.keyboard.press("Tab")
        assert page.evaluate("document.activeElement.id") == "join-room"
        page.keyboard.type("dev")
        page.keyboard.press("Enter")
        page.locator("#conv-title", has_text="# dev").wait_for()
        assert page.locator("#sidebar").is_hidden()  # the panel closed on the room
        assert page.evaluate("document.activeElement.id") == "message"
        assert page.get_by_role("button", name="Leave # dev").is_visible()
        width = page.evaluate("document.documentElement.scrollWidth")
        assert width <= 390  # nothing wider than the screen


# Every visible text's contrast against the background it is drawn on (WCAG 2 relative
# luminance), and the name colour of every hue (names.js picks one of 360 by hash).
_CONTRAST_JS = """
() => {
  const rgb = (c) => c.match(/[\\d.]+/g).map(Number);
  const lin = (v) => { v /= 255; return v <= 0.03928 ? v / 12.92 : ((v + 0.055) / 1.055) ** 2.4; };
  const lum = ([r, g, b]) => 0.2126 * lin(r) + 0.7152 * lin(g) + 0.0722 * lin(b);
  const ratio = (a, b) => { const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
                            return (x + 0.05) / (y + 0.05); };
  const background = (el) => {
    for (let n = el; n; n = n.parentElement) {
      const c = rgb(getComputedStyle(n).backgroundColor);
      if (c.length < 4 || c[3] > 0) return c.slice(0, 3);
    }
    return rgb(getComputedStyle(document.documentElement).backgroundColor).slice(0, 3);
  };
  const seen = [];
  for (const el of document.querySelectorAll("body *")) {
    const text = [...el.childNodes].some((n) => n.nodeType === 3 && n.textContent.trim());
    const box = el.getBoundingClientRect();
    if (!text || box.width === 0 || box.height === 0 || el.closest(".pending")) continue;
    const r = ratio(rgb(getComputedStyle(el).color).slice(0, 3), background(el));
    const what = el.textContent.trim().slice(0, 30);
    seen.push([r, `${el.tagName.toLowerCase()}.${el.className} "${what}"`]);
  }
  const log = document.getElementById("log");
  const probe = document.createElement("span");
  probe.className = "name";
  probe.textContent = "probe";
  log.append(probe);
  for (let h = 0; h < 360; h++) {
    probe.style.setProperty("--hue", String(h));
    const color = rgb(getComputedStyle(probe).color).slice(0, 3);
    seen.push([ratio(color, background(probe)), `hue ${h}`]);
  }
  probe.remove();
  return seen;
}
"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_every_text_meets_wcag_aa_contrast(browser: Any, tabs: list[Tab], scheme: str) -> None:
    with quiet_server(web_port=0) as srv:
        bob = connect(srv.address, "bob")
        tab = open_tab(browser, tabs, srv.web_url)
        tab.page.emulate_media(color_scheme=scheme)
        tab.register("alice")
        bob.send(command="pm", message="hello")
        bob.send(command="dm", to="alice", message="psst")
        tab.wait_message("hello")
        tab.page.locator("#dms .unread").wait_for()
        tab.say("/help")
        seen = tab.page.evaluate(_CONTRAST_JS)
        assert len(seen) > 380
        # A room: its topic, its events, the member's role, the Leave button.
        tab.say("/join dev")
        tab.page.locator("#conv-title", has_text="# dev").wait_for()
        tab.say("/topic the release")
        tab.page.locator("#log li.event", has_text="set the topic").wait_for()
        tab.say("/invite bob")
        tab.page.locator("#log li.event", has_text="invited bob").wait_for()
        in_room = tab.page.evaluate(_CONTRAST_JS)
        assert any("the release" in what for _, what in in_room)
        low = [(round(r, 2), what) for r, what in [*seen, *in_room] if r < 4.5]
        assert low == [], low


def test_logging_out_ends_the_session_and_shows_the_form(browser: Any, tabs: list[Tab]) -> None:
    with quiet_server(web_port=0) as srv:
        watcher = connect(srv.address, "bob")
        tab = open_tab(browser, tabs, srv.web_url)
        tab.register("alice")
        watcher.until("users", joined="alice")
        tab.page.get_by_role("button", name="Log out").click()
        watcher.until("users", left="alice")  # an exit, not a drop: the session is over
        tab.page.get_by_label("Username").wait_for()
        assert tab.page.locator("#chat-view").is_hidden()
        assert tab.page.locator("#password").input_value() == ""  # nothing kept


# ------------------------------------------------------------------ rooms


def _v2(address: tuple[str, int], name: str) -> RawClient:
    """A raw TCP client speaking rooms (protocol v2), logged in."""
    c = RawClient(address)
    c.send(command="login", username=name, password=PASSWORD, features=["rooms"])
    assert c.expect("login_ok")["version"] == 2
    return c


def _events(tab: Tab) -> list[str]:
    """The room events shown in the open conversation, in order."""
    texts: list[str] = tab.page.eval_on_selector_all(
        "#log li.event .text", "els => els.map(e => e.textContent)"
    )
    return texts


def _members(tab: Tab) -> list[str]:
    names: list[str] = tab.page.eval_on_selector_all(
        "#members button.member", "els => els.map(e => e.textContent)"
    )
    return names


def _unread(tab: Tab, title: str) -> str:
    return str(
        tab.page.locator("#sidebar button.conv", has_text=title).locator(".unread").inner_text()
    )


def test_rooms_two_tabs_an_sdk_client_and_a_lobby_only_tab(browser: Any, tabs: list[Tab]) -> None:
    with quiet_server(web_port=0) as srv:
        alice = open_tab(browser, tabs, srv.web_url)
        alice.register("alice")
        bob = open_tab(browser, tabs, srv.web_url)
        bob.register("bob")
        eve = open_tab(browser, tabs, srv.web_url)
        eve.register("eve")
        carol = ChatClient(srv.host, srv.port, rooms=True)
        carol.connect()
        try:
            carol.login("carol", PASSWORD)
            # alice makes the room with the command, bob joins it with the button.
            alice.say("/join #dev")
            alice.page.locator("#conv-title", has_text="# dev").wait_for()
            assert alice.page.locator("#part-button").is_visible()
            bob.page.get_by_label("Join or create a room").fill("DEV")  # any case: one room
            bob.page.get_by_role("button", name="Join", exact=True).click()
            bob.page.locator("#conv-title", has_text="# dev").wait_for()
            alice.page.locator("#log li.event", has_text="bob joined").wait_for()
            carol.join("dev")
            for tab in (alice, bob):
                tab.page.locator("#log li.event", has_text="carol joined").wait_for()
                tab.page.get_by_role("button", name="Write to carol").wait_for()
            assert [m.split(" ")[0] for m in _members(alice)] == ["alice", "bob", "carol"]
            assert "(owner)" in _members(alice)[0]
            alice.say("/topic release Friday")
            bob.page.locator("#conv-topic", has_text="Topic: release Friday").wait_for()

            # Messages in the room, all ways; none reaches the lobby or eve.
            with carol.expect(Broadcast, check=lambda e: e.message == "dev from alice") as w:
                alice.say("dev from alice")
                assert w.wait(10).room == "dev"
            bob.wait_message("dev from alice")
            bob.say("dev from bob")
            alice.wait_message("dev from bob")
            carol.pm("dev from carol", room="dev")
            for tab in (alice, bob):
                tab.wait_message("dev from carol")
                assert tab.texts() == ["dev from alice", "dev from bob", "dev from carol"]
            assert _events(alice) == [
                "alice joined",
                "bob joined",
                "carol joined",
                "alice set the topic: release Friday",
            ]

            # Unread counts: bob reads the lobby while dev moves, alice stays in dev.
            bob.open("# lobby")
            alice.say("dev while bob reads the lobby 1")
            alice.say("dev while bob reads the lobby 2")
            carol.pm("dev while bob reads the lobby 3", room="dev")
            bob.page.locator("#sidebar button.conv", has_text="# dev").locator(
                ".unread", has_text="3"
            ).wait_for()
            eve.say("lobby from eve")
            alice.page.locator("#sidebar button.conv", has_text="# lobby").locator(
                ".unread", has_text="1"
            ).wait_for()
            bob.wait_message("lobby from eve")
            assert bob.texts() == ["lobby from eve"]
            assert _unread(alice, "# lobby") == "1"
            bob.open("# dev")
            bob.wait_message("dev while bob reads the lobby 3")
            assert bob.page.locator("#sidebar .unread").count() == 0

            # eve is in the lobby only: she sees no room and none of its messages.
            eve.wait_message("lobby from eve")
            assert eve.page.locator("#sidebar #rooms button.conv").all_inner_texts() == ["# lobby"]
            assert eve.texts() == ["lobby from eve"]
            eve.say("/rooms")
            eve.page.locator(
                "#log li.notice", has_text="# dev (3 members): release Friday"
            ).wait_for()

            # bob leaves by the button; alice sees it, and his member entry goes.
            bob.page.get_by_role("button", name="Leave # dev").click()
            bob.page.locator("#conv-title", has_text="# lobby").wait_for()
            assert bob.page.locator("#rooms button.conv", has_text="# dev").count() == 0
            alice.page.locator("#log li.event", has_text="bob left").wait_for()
            assert [m.split(" ")[0] for m in _members(alice)] == ["alice", "carol"]
        finally:
            carol.close()


def test_a_tab_resumes_every_room_after_its_server_is_restarted(
    browser: Any, tabs: list[Tab], tmp_path: Path
) -> None:
    db = tmp_path / "chat.db"
    first = ServerProcess(db, "--web-port", "0", "--rate-limit", "off")
    assert first.web_port is not None
    ports = ["--port", str(first.port), "--web-port", str(first.web_port)]
    url = f"http://127.0.0.1:{first.web_port}/"
    try:
        tab = open_tab(browser, tabs, url)
        tab.allowed.append(re.compile(r"WebSocket connection to .* failed"))
        tab.register("alice")
        bob = _v2(first.address, "bob")
        for room in ("qa", "dev", "ops"):  # bob's rooms: he may set topics and kick
            bob.send(command="join", room=room)
            bob.until("room_info")
        for room in ("qa", "dev", "ops"):
            tab.say(f"/join {room}")
            tab.page.locator("#conv-title", has_text=f"# {room}").wait_for()
        for room in ("qa", "dev", "ops"):
            bob.send(command="pm", room=room, message=f"{room} before")
            bob.until("ack")
        tab.wait_message("ops before")
        first.proc.kill()  # SIGKILL: no bye, no close frame
        first.close()
        tab.page.wait_for_selector('#status[data-state="offline"]')
        second = ServerProcess(db, *ports, "--rate-limit", "off")
        try:
            bob = _v2(second.address, "bob")
            for i in range(2):
                for place in ("dev", "ops", None):
                    where = {"room": place} if place else {}
                    bob.send(command="pm", message=f"{place or 'lobby'} away {i}", **where)
                    bob.until("ack")
            bob.send(command="mode", room="dev", modes="+o", args=["alice"])
            bob.until("ack")
            bob.send(command="topic", room="dev", topic="after the crash")
            bob.until("ack")
            # Removed from qa while away: the tab drops it, and shows nothing of it.
            bob.send(command="pm", room="qa", message="qa away")
            bob.until("ack")
            bob.send(command="kick", room="qa", user="alice")
            bob.until("ack")
            tab.wait_online()
            tab.wait_message("ops away 1")  # the open room
            assert tab.texts() == ["ops before", "ops away 0", "ops away 1"]
            # dev: its message before the crash, read in ops, and the two while away.
            tab.page.locator("#sidebar button.conv", has_text="# dev").locator(
                ".unread", has_text="3"
            ).wait_for()
            tab.page.locator("#sidebar button.conv", has_text="# lobby").locator(
                ".unread", has_text="2"
            ).wait_for()
            bob.send(command="pm", room="dev", message="dev after")
            bob.until("ack")
            tab.open("# dev")
            tab.wait_message("dev after")
            tab.page.locator("#conv-topic", has_text="after the crash").wait_for()
            for title, texts in (
                ("# dev", ["dev before", "dev away 0", "dev away 1", "dev after"]),
                ("# lobby", ["lobby away 0", "lobby away 1"]),
                ("# ops", ["ops before", "ops away 0", "ops away 1"]),
            ):
                tab.open(title)
                tab.wait_message(texts[-1])
                log = tab.log()
                assert [text for _, text in log] == texts, (title, log)  # none missing, none twice
                seqs = [seq for seq, _ in log]
                assert seqs == sorted(set(s for s in seqs if s is not None)), log
            tab.open("# dev")
            # login_ok's roles already had the op; the live -o takes it back.
            assert _members(tab)[0] == "alice (you) (op)"
            bob.send(command="mode", room="dev", modes="-o", args=["alice"])
            bob.until("ack")
            tab.page.locator("#log li.event", has_text="-o alice").wait_for()
            assert _members(tab)[0] == "alice (you)"
            assert _events(tab) == [
                "alice joined",
                "bob set mode +o alice",
                "bob set the topic: after the crash",
                "bob set mode -o alice",
            ]
            rooms = tab.page.locator("#rooms button.conv .title").all_inner_texts()
            assert rooms == ["# lobby", "# dev", "# ops"]
        finally:
            second.close()
    finally:
        first.close()


def test_a_rooms_history_loads_on_scroll_up_apart_from_the_lobby(
    browser: Any, tabs: list[Tab]
) -> None:
    with quiet_server(web_port=0) as srv:
        first = open_tab(browser, tabs, srv.web_url)
        first.register("alice")
        first.say("/join dev")
        first.page.locator("#conv-title", has_text="# dev").wait_for()
        first.page.get_by_role("button", name="Log out").click()
        first.page.get_by_label("Username").wait_for()
        bob = _v2(srv.address, "bob")
        bob.send(command="join", room="dev")
        bob.until("room_info")
        for i in range(70):
            bob.send(command="pm", room="dev", message=f"dev {i:03}", id=i)
        for i in range(3):
            bob.send(command="pm", message=f"lobby {i}", id=100 + i)
        bob.until("ack", id=102)
        tab = open_tab(browser, tabs, srv.web_url)
        tab.login("alice")
        tab.wait_message("lobby 2")
        assert tab.texts() == ["lobby 0", "lobby 1", "lobby 2"]
        tab.open("# dev")
        tab.wait_message("dev 069")
        assert len(tab.log()) == 50
        tab.page.locator("#log-scroll").evaluate("e => { e.scrollTop = 0; }")
        tab.page.locator("#log-start").wait_for()
        assert tab.texts() == [f"dev {i:03}" for i in range(70)]


def test_moderation_from_the_member_list_and_commands(browser: Any, tabs: list[Tab]) -> None:
    """Issue 36 in the web client: an operator's buttons beside each member and the
    REPL's /commands; the events shown to the room and to whom they name; a refusal
    said in the composer."""
    with quiet_server(web_port=0) as srv:
        alice = open_tab(browser, tabs, srv.web_url)
        alice.register("alice")
        alice.say("/join #dev")
        alice.page.locator("#conv-title", has_text="# dev").wait_for()
        bob = open_tab(browser, tabs, srv.web_url)
        bob.register("bob")
        bob.say("/join #dev")
        bob.page.locator("#conv-title", has_text="# dev").wait_for()
        mallory = _v2(srv.address, "mallory")
        mallory.send(command="join", room="dev", id=1)
        mallory.until("room_info", id=1)
        alice.page.get_by_role("button", name="Write to mallory").wait_for()

        # bob is no operator: no buttons, and the server's refusal in the composer.
        assert bob.page.locator("#members .mod-action").count() == 0
        bob.say("/kick mallory")
        bob.page.locator("#composer-error", has_text="only operators of dev").wait_for()

        # alice (the owner) makes bob an operator with the button beside him.
        alice.page.get_by_role("button", name="op bob").click()
        for tab in (alice, bob):
            tab.page.locator("#log li.event", has_text="alice set mode +o bob").wait_for()
        bob.page.get_by_role("button", name="kick mallory").wait_for()
        assert "(op)" in _members(alice)[1]
        assert alice.page.get_by_role("button", name="deop bob").is_visible()
        assert bob.page.get_by_role("button", name="kick alice").count() == 0  # the owner

        # A timed mute with a reason, by command: the page, the room and mallory see it.
        alice.say("/mute mallory 10m flooding")
        for tab in (alice, bob):
            tab.page.locator("#log li.event", has_text="alice muted mallory (flooding)").wait_for()
        muted = mallory.until("room_event", event="mute")
        assert muted["by"] == "alice" and muted["expires"] - muted["ts"] == pytest.approx(600)
        mallory.send(command="pm", room="dev", message="spam", id=2)
        assert mallory.until("error", id=2)["code"] == "muted"
        alice.say("/unmute mallory")
        bob.page.locator("#log li.event", has_text="alice unmuted mallory").wait_for()
        alice.say("/unmute mallory")  # changes nothing: said so
        alice.page.locator("#log li.notice", has_text="mallory was not muted in # dev").wait_for()

        # bob kicks with his button; mallory comes back and alice bans her by command.
        bob.page.get_by_role("button", name="kick mallory").click()
        for tab in (alice, bob):
            tab.page.locator("#log li.event", has_text="bob removed mallory").wait_for()
        assert mallory.until("room_event", event="kick")["by"] == "bob"
        mallory.send(command="join", room="dev", id=3)
        mallory.until("room_info", id=3)
        alice.page.get_by_role("button", name="ban mallory").wait_for()
        alice.say("/ban mallory 1h spam")
        bob.page.locator("#log li.event", has_text="alice banned mallory (spam)").wait_for()
        mallory.until("room_event", event="ban")
        mallory.send(command="join", room="dev", id=4)
        assert mallory.until("error", id=4)["code"] == "banned"
        alice.say("/bans")
        listed = re.compile(r"mallory banned from # dev by alice until .+: spam")
        alice.page.locator("#log li.notice", has_text=listed).wait_for()
        assert "mallory" not in " ".join(_members(bob))

        # /mode reads and changes; /deop by command; a kick naming bob takes him out.
        alice.say("/mode +m")
        bob.page.locator("#log li.event", has_text="alice set mode +m").wait_for()
        alice.say("/mode")
        alice.page.locator("#log li.notice", has_text="# dev has modes +ntm").wait_for()
        alice.say("/deop bob")
        bob.page.locator("#log li.event", has_text="alice set mode -o bob").wait_for()
        bob.page.locator("#members .mod-action").first.wait_for(state="detached")
        alice.say("/kick bob see you")
        bob.page.locator(
            "#log li.notice", has_text="alice removed bob (see you): you are no longer in # dev"
        ).wait_for()
        bob.page.locator("#conv-title", has_text="# lobby").wait_for()
        alice.page.locator("#log li.event", has_text="alice removed bob (see you)").wait_for()
        alice.say("/ban")
        alice.page.locator("#composer-error", has_text="Usage: /ban NAME").wait_for()


def test_a_server_ban_ends_a_tab_and_it_stays_offline_saying_why(
    browser: Any, tabs: list[Tab]
) -> None:
    from chatroom_server.__main__ import main

    with quiet_server(web_port=0) as srv:
        alice = open_tab(browser, tabs, srv.web_url)
        alice.register("alice")
        assert main(["admin", "--db", str(srv.db_path), "ban", "alice", "--reason", "spam"]) == 0
        alice.page.locator(
            '#status[data-state="offline"]', has_text="alice is banned from this server (spam)"
        ).wait_for()
        alice.page.locator("#composer-error", has_text="banned").wait_for()
