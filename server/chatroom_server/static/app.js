// The web client (docs/WEB.md): login and registration, the room and DMs, members,
// commands, history on scroll-up, and reconnection with resume.
//
// Resume (docs/PROTOCOL.md §Resume): `since` is the highest seq this tab received on
// the live stream (frames and acks, never history pages, which may run ahead of it), so
// after a drop the server replays exactly what came after it. Every message is kept
// by seq in its conversation, so one that arrives twice (a replay overlapping a
// history page) is shown once. A message typed while offline, or whose ack was lost
// with the connection, waits with its cid and is sent again once the replay is done:
// the server stores a cid once, and a replayed message with our cid settles it.

import { COMMANDS, HELP, parse } from "./commands.js";
import { Connection } from "./connection.js";
import { LOBBY, Conversations } from "./conversations.js";
import { loginForm } from "./login.js";
import { Completer } from "./names.js";
import { roleOf } from "./rooms.js";
import { roomHandlers } from "./roomview.js";
import {
  $,
  conversationButton,
  eventItem,
  insertBySeq,
  markFailed,
  markSent,
  memberButton,
  messageItem,
  noticeItem,
} from "./view.js";

const HISTORY_PAGE = 50;

const state = {
  me: null,
  password: null, // kept in memory only, to log in again after a drop
  newUser: false,
  minPassword: 8,
  epoch: null,
  lastSeq: null,
  limits: { max_message: 4000, max_frame: 65536 },
  members: [], // the users online (the lobby's members)
  shown: [], // the names in the member list now (the open room's, or the lobby's)
  roomsOn: false, // the server speaks rooms on this connection (protocol v2)
  serverOperator: false, // whois says so at each login: moderates every room
  loggedIn: false, // has been: reconnects log in again by themselves
  online: false, // logged in on the current connection
  replaying: false,
  convs: new Conversations(),
  active: LOBBY,
  pending: new Map(), // cid -> {frame, li, key}
  requests: new Map(), // request id -> conversation key (history pages)
  roomRequests: new Map(), // request id -> {kind, room, topic} (join, part, topic...)
  nextId: 1,
  cidPrefix: Math.random().toString(36).slice(2, 10),
};

const completer = new Completer();
const conn = new Connection({ onOpen: opened, onFrame: received, onClose: closed });
const form = loginForm(state, conn);
// Function declarations below are hoisted: the room handlers can be made here.
const rooms = roomHandlers({
  state,
  conn,
  show,
  notice,
  renderSidebar,
  renderMembers,
  composerError,
  seen,
  nearEnd,
  scrollToEnd,
  closePanels,
});

// ------------------------------------------------------------------ status

function setStatus(kind, text) {
  const s = $("status");
  s.dataset.state = kind;
  s.textContent = text;
}

function opened() {
  if (state.loggedIn) {
    setStatus("connecting", "reconnecting… logging in again");
    login(true);
  } else {
    setStatus("connecting", "connected; log in to chat");
    $("login-button").disabled = false;
  }
}

function closed(retry, wait) {
  state.online = false;
  state.replaying = false;
  if (!retry) return;
  const secs = Math.max(1, Math.round(wait / 1000));
  setStatus("offline", `offline; reconnecting in ${secs} s`);
  if (state.loggedIn) {
    // The list is what it was: say so until the next login brings the real one.
    $("member-count").textContent = `(${state.shown.length}, when last online)`;
  }
}

// ------------------------------------------------------------------ login

function login(again = false) {
  const frame = {
    command: "login",
    username: state.me ?? $("username").value.trim(),
    id: "login",
    features: ["rooms"],
  };
  if (state.password !== null) frame.password = state.password;
  if (again && state.lastSeq !== null && state.epoch !== null) {
    frame.since = state.lastSeq;
    frame.epoch = state.epoch;
  }
  conn.send(frame);
}

function loggedIn(frame) {
  const first = !state.loggedIn;
  state.me = frame.username;
  state.loggedIn = true;
  state.online = true;
  if (frame.limits) state.limits = frame.limits;
  if (state.epoch !== null && frame.epoch !== state.epoch) {
    state.lastSeq = null; // another database: our seqs mean nothing there
  }
  state.epoch = frame.epoch ?? null;
  if (state.lastSeq === null && frame.seq != null) state.lastSeq = frame.seq;
  state.replaying = frame.replay === true;
  rooms.syncRooms(frame);
  setMembers(frame.users);
  // A server operator moderates every room (docs/PROTOCOL.md §Who may moderate).
  conn.send({ command: "whois", user: state.me, id: "whoami" });
  setStatus("online", `online as ${state.me}`);
  if (first) {
    $("login-view").hidden = true;
    $("chat-view").hidden = false;
    $("top-actions").hidden = false;
    $("password").value = "";
    $("password2").value = "";
    show(LOBBY);
    $("message").focus();
  }
  if (!state.replaying) flushPending();
}

// ------------------------------------------------------------------ frames in

function received(f) {
  switch (f.type) {
    case "password_required":
      form.askPassword(f);
      break;
    case "login_ok":
      loggedIn(f);
      break;
    case "broadcast":
    case "dm":
      message(f);
      break;
    case "ack":
      acked(f);
      break;
    case "replay_done":
      state.replaying = false;
      if (f.seq != null) seen(f.seq);
      flushPending();
      break;
    case "replay_truncated":
      notice(LOBBY, "Some messages from while you were away are older than the server " +
        "replays; scroll up for them.");
      break;
    case "history":
      historyPage(f);
      break;
    case "users":
      setMembers(f.users);
      break;
    case "room_event":
      rooms.roomEvent(f);
      break;
    case "room_info":
      rooms.roomInfoReply(f);
      break;
    case "rooms":
      rooms.roomList(f);
      break;
    case "bans":
      rooms.banList(f);
      break;
    case "whois":
      if (f.id === "whoami") {
        state.serverOperator = f.server_operator === true;
        renderMembers();
      }
      break;
    case "error":
      failed(f);
      break;
    case "bye":
      goodbye(f);
      break;
    default:
      break; // pong, and frame types this page does not know (docs/PROTOCOL.md)
  }
}

function seen(seq) {
  if (seq != null && (state.lastSeq === null || seq > state.lastSeq)) state.lastSeq = seq;
}

function message(f) {
  seen(f.seq);
  const msg = { ...f, kind: f.type === "dm" ? "dm" : "pm" };
  const key = state.convs.keyFor(msg, state.me);
  const mine = f.cid != null ? state.pending.get(f.cid) : undefined;
  if (mine !== undefined) {
    // Ours, sent before a drop: the replay says it was stored (its ack was lost).
    settle(f.cid, f.seq);
    return;
  }
  // The server sends only our rooms' messages; one for a room the page does not list
  // (left a moment ago) must not bring the room back into the side list.
  if (f.type === "broadcast" && !state.convs.byKey.has(key)) return;
  const conv = state.convs.get(key);
  if (!conv.add(msg)) return; // had it already
  if (key === state.active) {
    append(msg);
  } else if (msg.from.toLowerCase() !== state.me.toLowerCase()) {
    conv.unread += 1;
    renderSidebar();
  } else {
    renderSidebar();
  }
}

function acked(f) {
  seen(f.seq);
  if (typeof f.id === "string" && state.pending.has(f.id)) settle(f.id, f.seq);
  else if (typeof f.id === "string" && state.roomRequests.has(f.id)) rooms.roomAck(f);
}

function settle(cid, seq) {
  const p = state.pending.get(cid);
  state.pending.delete(cid);
  const conv = state.convs.get(p.key);
  const f = p.frame;
  const ts = Date.now() / 1000;
  const msg = { from: state.me, to: f.to, room: f.room, message: f.message, ts, seq };
  if (seq == null || conv.add(msg)) {
    markSent(p.li, seq);
    if (p.li.isConnected) {
      p.li.remove();
      insertBySeq($("log"), p.li);
    }
  } else {
    p.li.remove(); // known already (a history page had it): shown once
  }
}

function failed(f) {
  if (f.id === "probe" || f.id === "login") {
    if (state.loggedIn && !state.online) {
      if (["bad_credentials", "invalid_username", "banned"].includes(f.code)) {
        conn.stop(); // the account changed under us: retrying cannot help
        setStatus("offline", `offline: ${f.message}. Reload to log in again.`);
      } else {
        conn.drop(); // busy or throttled: try again after the usual wait
      }
      return;
    }
    state.password = null;
    form.loginError(f.message);
    return;
  }
  if (typeof f.id === "string" && state.pending.has(f.id)) {
    const p = state.pending.get(f.id);
    state.pending.delete(f.id);
    markFailed(p.li, f.message);
    composerError(f.message);
    return;
  }
  state.roomRequests.delete(f.id);
  if (typeof f.id === "string" && state.requests.has(f.id)) {
    const conv = state.convs.get(state.requests.get(f.id));
    state.requests.delete(f.id);
    conv.loading = false;
  }
  composerError(f.message);
}

function goodbye(f) {
  if (f.reason === "session_replaced") {
    conn.stop();
    setStatus("offline", "offline: you logged in somewhere else. Reload to come back here.");
  } else if (f.reason === "exit") {
    conn.stop();
    location.reload();
  }
  // Anything else (the server restarting, a timeout): the connection reconnects.
}

// ------------------------------------------------------------------ members

function setMembers(users) {
  state.members = [...users];
  renderMembers();
}

// The open room's members (marked when away), else the users online.
function renderMembers() {
  const info = state.convs.get(state.active).info;
  const online = new Set(state.members.map((n) => n.toLowerCase()));
  const me = state.me ?? "";
  state.shown = info ? info.members : state.members;
  const conv = state.convs.get(state.active);
  const act = (verb, user) => {
    rooms.roomCommand({ kind: "moderate", verb, user, duration: null, reason: null }, conv);
  };
  const item = info
    ? (n) => {
        const role = roleOf(info, n);
        const away = !online.has(n.toLowerCase());
        return memberButton(n, me, openDm, role, away, moderation(info, n, role), act);
      }
    : (n) => memberButton(n, me, openDm);
  $("members").replaceChildren(...state.shown.map(item));
  $("member-count").textContent = `(${state.shown.length})`;
}

// The buttons an operator of the open room (or a server operator) gets beside a member.
function moderation(info, name, role) {
  const me = state.me ?? "";
  const mine = roleOf(info, me);
  const operator = state.serverOperator || mine === "owner" || mine === "op";
  if (!operator || name.toLowerCase() === me.toLowerCase()) return [];
  if (role === "owner" && !state.serverOperator) return [];
  const verbs = [];
  if (role !== "owner") verbs.push(role === "op" ? "deop" : "op");
  if (role !== "owner" && role !== "op") verbs.push(role === "voice" ? "devoice" : "voice");
  verbs.push("mute", "kick", "ban");
  return verbs.map((verb) => ({ verb, label: verb }));
}

function openDm(name) {
  const key = state.convs.dmKey(name);
  state.convs.get(key);
  show(key);
  closePanels();
  $("message").focus();
}

// ------------------------------------------------------------------ conversations

function renderSidebar() {
  const pick = (key) => {
    show(key);
    closePanels();
    $("message").focus();
  };
  const entries = (list) => list.map((c) => conversationButton(c, c.key === state.active, pick));
  $("rooms").replaceChildren(...entries(state.convs.rooms()));
  const dms = state.convs.dms();
  $("dms").replaceChildren(...entries(dms));
  $("no-dms").hidden = dms.length > 0;
  const unread = [...state.convs.byKey.values()].reduce((n, c) => n + c.unread, 0);
  document.title = unread > 0 ? `(${unread}) chatroom` : "chatroom";
}

function show(key) {
  state.active = key;
  const conv = state.convs.get(key);
  conv.unread = 0;
  $("conv-title").textContent = conv.title;
  rooms.renderTopic();
  $("part-button").hidden = conv.kind !== "room" || key === LOBBY;
  $("part-button").textContent = `Leave ${conv.title}`;
  $("message-label").textContent = `Message to ${conv.title}`;
  $("message").placeholder = `Message ${conv.title} — /help for commands, Tab completes names`;
  const log = $("log");
  const items = [...conv.bySeq.values()]
    .sort((a, b) => a.seq - b.seq)
    .map((m) => (m.event ? eventItem(m, m.text) : messageItem(m)));
  for (const p of state.pending.values()) if (p.key === key) items.push(p.li);
  log.replaceChildren(...items);
  $("log-start").hidden = conv.hasMore || !conv.loaded;
  $("older").hidden = !conv.hasMore || !conv.loaded;
  renderSidebar();
  renderMembers();
  scrollToEnd();
  if (!conv.loaded) loadOlder(conv);
}

function nearEnd() {
  const s = $("log-scroll");
  return s.scrollHeight - s.scrollTop - s.clientHeight < 80;
}

function scrollToEnd() {
  const s = $("log-scroll");
  s.scrollTop = s.scrollHeight;
}

function append(msg) {
  const stick = nearEnd();
  insertBySeq($("log"), messageItem(msg));
  if (stick) scrollToEnd();
}

function notice(key, text) {
  if (key !== state.active) return;
  const stick = nearEnd();
  $("log").append(noticeItem(text));
  if (stick) scrollToEnd();
}

function loadOlder(conv) {
  if (conv.loading || (conv.loaded && !conv.hasMore) || !state.online) return;
  conv.loading = true;
  conv.loaded = true;
  const id = `h${state.nextId++}`;
  state.requests.set(id, conv.key);
  const frame = { command: "history", limit: HISTORY_PAGE, id };
  const oldest = conv.oldest;
  if (oldest !== null) frame.before = oldest;
  if (conv.kind === "dm") frame.with = conv.peer;
  else if (state.roomsOn && conv.key !== LOBBY) frame.room = conv.info?.name ?? conv.key.slice(5);
  conn.send(frame);
}

function historyPage(f) {
  const key = state.requests.get(f.id);
  if (key === undefined) return;
  state.requests.delete(f.id);
  const conv = state.convs.get(key);
  conv.loading = false;
  conv.hasMore = f.has_more;
  const fresh = f.messages.filter((m) => conv.add({ ...m, type: m.kind }));
  if (key !== state.active) return;
  const s = $("log-scroll");
  const fromEnd = s.scrollHeight - s.scrollTop;
  const log = $("log");
  for (const m of fresh) insertBySeq(log, messageItem(m));
  s.scrollTop = s.scrollHeight - fromEnd; // the messages being read stay in place
  $("older").hidden = !conv.hasMore;
  $("log-start").hidden = conv.hasMore;
}

// ------------------------------------------------------------------ sending

function composerError(text) {
  $("composer-error").textContent = text;
}

function sendMessage(kind, text, to = null, roomKey = LOBBY) {
  const length = [...text].length; // the server counts characters, not UTF-16 units
  if (length > state.limits.max_message) {
    composerError(
      `That message is ${length} characters; the server takes at most ` +
        `${state.limits.max_message}. Nothing was sent.`,
    );
    return false;
  }
  const cid = `${state.cidPrefix}-${state.nextId++}`;
  const frame =
    kind === "pm"
      ? { command: "pm", message: text, cid, id: cid }
      : { command: "dm", to, message: text, cid, id: cid };
  if (kind === "pm" && roomKey !== LOBBY) frame.room = roomKey.slice(5);
  const key = kind === "pm" ? roomKey : state.convs.dmKey(to);
  state.convs.get(key);
  const li = messageItem({ from: state.me, to, message: text, pending: true, cid });
  state.pending.set(cid, { frame, li, key });
  if (key === state.active) {
    $("log").append(li);
    scrollToEnd();
  } else {
    renderSidebar();
  }
  if (state.online && !state.replaying) conn.send(frame);
  return true;
}

function flushPending() {
  for (const p of state.pending.values()) conn.send(p.frame);
}

function onCompose(event) {
  event.preventDefault();
  composerError("");
  const input = $("message");
  const action = parse(input.value);
  const conv = state.convs.get(state.active);
  let done = true;
  switch (action.kind) {
    case "empty":
      return;
    case "say":
      done =
        conv.kind === "dm"
          ? sendMessage("dm", action.text, conv.peer)
          : sendMessage("pm", action.text, null, conv.key);
      break;
    case "dm":
      done = sendMessage("dm", action.text, action.to);
      break;
    case "open":
      openDm(action.to);
      break;
    case "who":
      notice(state.active, `Here now: ${state.members.join(", ")}`);
      break;
    case "help":
      for (const line of HELP) notice(state.active, line);
      break;
    case "join":
    case "part":
    case "topic":
    case "invite":
    case "rooms":
    case "bans":
    case "mode":
    case "moderate":
      done = rooms.roomCommand(action, conv);
      break;
    case "quit":
      logout();
      break;
    case "error":
      composerError(action.text);
      done = false;
      break;
  }
  if (done) input.value = "";
  completer.reset();
}

function logout() {
  if (!conn.send({ command: "exit" })) location.reload();
}

// ------------------------------------------------------------------ keyboard, panels

function onKey(event) {
  if (event.key === "Tab" && !event.shiftKey && !event.altKey && !event.ctrlKey) {
    const names = state.shown.filter((n) => n.toLowerCase() !== (state.me ?? "").toLowerCase());
    if (completer.complete($("message"), names, COMMANDS) !== null) event.preventDefault();
    return;
  }
  if (!["Shift", "Tab"].includes(event.key)) completer.reset();
}

function onGlobalKey(event) {
  if (!event.altKey || !["ArrowUp", "ArrowDown"].includes(event.key) || !state.online) return;
  const keys = [...state.convs.rooms(), ...state.convs.dms()].map((c) => c.key);
  const at = keys.indexOf(state.active);
  const next = keys[(at + (event.key === "ArrowDown" ? 1 : keys.length - 1)) % keys.length];
  event.preventDefault();
  show(next);
  $("message").focus();
}

function togglePanel(button, panel) {
  const open = !document.body.classList.contains(`show-${panel}`);
  closePanels();
  if (open) {
    document.body.classList.add(`show-${panel}`);
    button.setAttribute("aria-expanded", "true");
    $(panel).querySelector("button")?.focus();
  }
}

function closePanels() {
  for (const [id, panel] of [["toggle-sidebar", "sidebar"], ["toggle-members", "members-panel"]]) {
    document.body.classList.remove(`show-${panel}`);
    $(id).setAttribute("aria-expanded", "false");
  }
}

function start() {
  form.bind();
  $("composer").addEventListener("submit", onCompose);
  $("message").addEventListener("keydown", onKey);
  document.addEventListener("keydown", onGlobalKey);
  $("me-button").addEventListener("click", () => {
    const input = $("message");
    if (!input.value.startsWith("/me ")) input.value = `/me ${input.value}`;
    input.focus();
  });
  $("older").addEventListener("click", () => loadOlder(state.convs.get(state.active)));
  $("log-scroll").addEventListener("scroll", () => {
    if ($("log-scroll").scrollTop < 40) loadOlder(state.convs.get(state.active));
  });
  $("toggle-sidebar").addEventListener("click", (e) => togglePanel(e.currentTarget, "sidebar"));
  $("toggle-members").addEventListener("click", (e) =>
    togglePanel(e.currentTarget, "members-panel"),
  );
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape") closePanels();
  });
  $("logout").addEventListener("click", logout);
  $("join-form").addEventListener("submit", (e) => {
    e.preventDefault();
    const room = $("join-room").value.trim().replace(/^#/, "");
    if (room !== "" && rooms.roomCommand({ kind: "join", room, key: null })) {
      $("join-room").value = "";
    }
  });
  $("part-button").addEventListener("click", () =>
    rooms.roomCommand({ kind: "part", room: null, reason: null }, state.convs.get(state.active)),
  );
  $("login-button").disabled = true;
  conn.connect();
  $("username").focus();
}

start();
