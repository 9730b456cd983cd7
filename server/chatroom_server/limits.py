"""Flood control and login throttling: small, clock-driven, I/O-free.

Every class takes ``now`` from the caller (the server's injectable clock), so tests drive
time by hand and never wait for it.

Threading: :class:`TokenBucket` and :class:`FloodMeter` belong to one connection and are
used only by its reader thread. :class:`LoginThrottle` and :class:`WindowCounter` are
shared by every connection thread and guard their tables with their own lock; a
:class:`LoginAttempt` belongs to the thread checking that password.
"""

from __future__ import annotations

import threading
from collections import OrderedDict, deque
from typing import Any


class TokenBucket:
    """``burst`` tokens, refilled at ``rate`` per second; one command costs one."""

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, now: float) -> bool:
        tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return True
        self.tokens = tokens
        return False


class FloodMeter:
    """Sustained abuse: more than ``limit`` frames in each of ``seconds`` consecutive
    whole seconds (docs/PROTOCOL.md §Flood control: over 5x the rate for 5 s)."""

    __slots__ = ("count", "limit", "second", "seconds", "streak")

    def __init__(self, limit: float, seconds: int) -> None:
        self.limit = limit
        self.seconds = seconds
        self.second = -1
        self.count = 0
        self.streak = 0

    def abusive(self, now: float) -> bool:
        sec = int(now)
        if sec != self.second:
            consecutive = sec == self.second + 1 and self.count > self.limit
            self.streak = self.streak + 1 if consecutive else 0
            self.second = sec
            self.count = 0
        self.count += 1
        # The current second counts as soon as it is over the limit.
        return self.streak + (self.count > self.limit) >= self.seconds


class Throttled:
    """A password check refused for now: ``wait`` seconds, and why (``scope``):
    ``"address"`` (this address's wrong passwords, any accounts), ``"account"`` (this
    address's wrong passwords for this account) or ``"checking"`` (this address has as
    many checks of this account under way as it may)."""

    __slots__ = ("scope", "wait")

    def __init__(self, wait: float, scope: str) -> None:
        self.wait = wait
        self.scope = scope


class LoginAttempt:
    """A password check :class:`LoginThrottle` let through: wait ``delay`` seconds (the
    account's ceiling), check, then :meth:`failed` or :meth:`succeeded`; :meth:`close`
    (in a ``finally``) ends one that was neither (a new name registered, the store busy).
    Used by the one thread that checks it."""

    __slots__ = ("_ended", "_throttle", "account", "address", "delay", "per_address")

    def __init__(
        self,
        throttle: LoginThrottle,
        account: str,
        address: str,
        per_address: bool,
        delay: float,
    ) -> None:
        self._throttle = throttle
        self.account = account
        self.address = address
        self.per_address = per_address
        self.delay = delay
        self._ended = False

    def failed(self, now: float) -> None:
        """A wrong password."""
        if not self._ended:
            self._ended = True
            self._throttle._end(self, now, "failed")

    def succeeded(self, now: float) -> None:
        """The right password."""
        if not self._ended:
            self._ended = True
            self._throttle._end(self, now, "succeeded")

    def close(self, now: float) -> None:
        """No verdict on the password (a new name, the store busy): nothing is counted."""
        if not self._ended:
            self._ended = True
            self._throttle._end(self, now, "none")


class _Strikes:
    """Wrong passwords from one source: how many, the last one's time, the end of the
    wait they earned, and (per account and address) the checks under way."""

    __slots__ = ("checking", "fails", "last", "until")

    def __init__(self) -> None:
        self.fails = 0
        self.last = 0.0
        self.until = 0.0
        self.checking = 0


class LoginThrottle:
    """Wrong passwords slow down their source, never the account's owner elsewhere
    (docs/SECURITY.md, docs/PROTOCOL.md §Flood control). Three measures:

    - **Per account and address**: the first ``free`` wrong passwords for an account
      from an address cost nothing; after that each one makes that address wait
      ``base * 2**k`` seconds (at most ``cap``) before its next check of that account.
      At most ``free`` checks of one account from one address run at once (past the free
      ones, one), so a burst of connections cannot guess before the count catches up.
      The right password from that address resets it.
    - **Per address**, whatever the accounts: after ``address_free`` wrong passwords the
      address waits the same way for any account (guessing one password across many
      names). A right password does not reset it (an attacker could log in to an
      account of its own to do that); failures are forgotten after ``forget`` seconds
      without one, as the others are.
    - **Per account, from anywhere: a ceiling that slows and never refuses.** At most
      ``account_burst`` checks of one account at once, then one every ``account_gap``
      seconds, in the order they come (a GCRA on the account's checks): a check past
      the ceiling is given the next free slot and waits for it (``LoginAttempt.delay``),
      it is not refused. Right passwords and checks without a verdict give their slot
      back, so only wrong passwords use the ceiling up. So many addresses together
      guess at most one password per ``account_gap`` seconds, and the owner, from an
      address that has not failed, waits for the slots ahead of theirs and then gets in:
      with K addresses attacking, at most about ``K * free * account_gap`` seconds.

    Those tables each keep at most ``size`` keys (least recently used forgotten first).
    One lock guards them all; nothing under it blocks.
    """

    def __init__(
        self,
        free: int = 3,
        base: float = 1.0,
        cap: float = 60.0,
        *,
        address_free: int = 20,
        account_burst: int = 30,
        account_gap: float = 1.0,
        forget: float = 900.0,
        size: int = 100_000,
    ) -> None:
        self.free = free
        self.base = base
        self.cap = cap
        self.address_free = address_free
        self.account_burst = account_burst
        self.account_gap = account_gap
        self.forget = forget
        self.size = size
        self._lock = threading.Lock()  # guards the three tables below
        self._pairs: OrderedDict[tuple[str, str], _Strikes] = OrderedDict()
        self._addresses: OrderedDict[str, _Strikes] = OrderedDict()
        # account -> the ceiling's "theoretical arrival time": the next check at or after
        # it waits (GCRA); absent when it is in the past (nothing to slow down).
        self._accounts: OrderedDict[str, float] = OrderedDict()

    def begin(
        self, account: str, address: str, now: float, per_address: bool = True
    ) -> LoginAttempt | Throttled:
        """A check of ``account``'s password from ``address``: let through (to be ended,
        see :class:`LoginAttempt`) or refused for now. ``per_address`` False: the
        address is exempt from the per-address measure (loopback, by default)."""
        with self._lock:
            if per_address:
                s = self._addresses.get(address)
                if s is not None and self._fresh(s, now).until > now:
                    return Throttled(s.until - now, "address")
            key = (account, address)
            pair = self._pairs.get(key)
            if pair is None:
                pair = _Strikes()
            else:
                self._fresh(pair, now)
                if pair.until > now:
                    return Throttled(pair.until - now, "account")
                if pair.checking and pair.fails + pair.checking >= self.free:
                    return Throttled(self.base, "checking")
            pair.checking += 1
            self._touch(self._pairs, key, pair)
            tat = max(self._accounts.get(account, now), now)
            slot = max(now, tat - (self.account_burst - 1) * self.account_gap)
            self._touch(self._accounts, account, tat + self.account_gap)
            return LoginAttempt(self, account, address, per_address, slot - now)

    def clear(self, account: str, address: str, now: float, per_address: bool = True) -> bool:
        """Whether :meth:`begin` would let a check through at once, without a refusal
        or a ``delay`` (a login the admission thread may run itself, which must never
        wait: chatroom_server.listeners). Changes nothing."""
        with self._lock:
            if per_address:
                s = self._addresses.get(address)
                if s is not None and s.until > now:
                    return False
            pair = self._pairs.get((account, address))
            if pair is not None and (pair.until > now or pair.checking):
                return False
            tat = self._accounts.get(account, now)
            return tat - (self.account_burst - 1) * self.account_gap <= now

    def _fresh(self, s: _Strikes, now: float) -> _Strikes:
        if s.fails and now - s.last >= self.forget and now >= s.until:
            s.fails = 0
        return s

    def _touch(self, table: OrderedDict[Any, Any], key: Any, value: Any) -> None:
        table.pop(key, None)
        table[key] = value
        while len(table) > self.size:
            table.popitem(last=False)

    def _strike(self, s: _Strikes, free: int, now: float) -> None:
        s.fails += 1
        s.last = now
        extra = s.fails - free
        if extra > 0:
            s.until = now + min(self.cap, self.base * 2 ** min(extra - 1, 32))

    def _end(self, attempt: LoginAttempt, now: float, verdict: str) -> None:
        key = (attempt.account, attempt.address)
        with self._lock:
            pair = self._pairs.get(key)
            if pair is not None and pair.checking:
                pair.checking -= 1
            if verdict == "failed":
                if pair is None:  # forgotten meanwhile (the table was full)
                    pair = _Strikes()
                self._strike(pair, self.free, now)
                self._touch(self._pairs, key, pair)
                if attempt.per_address:
                    s = self._addresses.get(attempt.address) or _Strikes()
                    self._strike(self._fresh(s, now), self.address_free, now)
                    self._touch(self._addresses, attempt.address, s)
                return
            # The ceiling's slot back: it slows wrong passwords only.
            tat = self._accounts.get(attempt.account)
            if tat is not None:
                tat -= self.account_gap
                if tat > now:
                    self._accounts[attempt.account] = tat
                else:
                    del self._accounts[attempt.account]
            if pair is not None and (verdict == "succeeded" or not pair.fails):
                if not pair.checking:
                    del self._pairs[key]
                elif verdict == "succeeded":
                    pair.fails = 0
                    pair.until = 0.0


class WindowCounter:
    """At most ``limit`` events per key in any ``window`` seconds (e.g. registrations
    per address)."""

    def __init__(self, limit: int, window: float, size: int = 100_000) -> None:
        self.limit = limit
        self.window = window
        self.size = size
        self._lock = threading.Lock()  # guards _events
        self._events: OrderedDict[str, deque[float]] = OrderedDict()

    def allow(self, key: str, now: float) -> bool:
        """Record an event for ``key`` if it is within the limit; False if it is not."""
        with self._lock:
            q = self._events.pop(key, None) or deque()
            while q and now - q[0] >= self.window:
                q.popleft()
            ok = len(q) < self.limit
            if ok:
                q.append(now)
            self._events[key] = q
            while len(self._events) > self.size:
                self._events.popitem(last=False)
            return ok
