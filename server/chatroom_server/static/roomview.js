// The page's side of rooms (docs/PROTOCOL.md §Rooms): the rooms of login_ok, their
// events, the replies to /join /part /topic /invite /rooms, and those commands. app.js
// hands in what it draws with (`page`), so this module needs nothing of it.

import { LOBBY } from "./conversations.js";
import { applyEvent, eventText, removesMe, roomInfo } from "./rooms.js";
import { $, eventItem, insertBySeq } from "./view.js";

const same = (a, b) => a.toLowerCase() === b.toLowerCase();

// docs/PROTOCOL.md §Moderation's commands; /op /deop /voice /devoice are modes.
const MODERATION = new Set(["kick", "ban", "unban", "mute", "unmute"]);
const ROLE_MODES = { op: "+o", deop: "-o", voice: "+v", devoice: "-v" };

function moderationFrame(action, room) {
  if (action.verb in ROLE_MODES) {
    return { command: "mode", room, modes: ROLE_MODES[action.verb], args: [action.user] };
  }
  const frame = { command: action.verb, room, user: action.user };
  if (action.reason) frame.reason = action.reason;
  if (action.duration !== null && action.duration !== undefined) frame.duration = action.duration;
  return frame;
}

// page: {state, conn, show, notice, renderSidebar, renderMembers, composerError, seen,
// nearEnd, scrollToEnd, closePanels}.
export function roomHandlers(page) {
  const { state, conn, show, notice, renderSidebar, renderMembers, composerError, seen } = page;
  const { nearEnd, scrollToEnd, closePanels } = page;

  // login_ok lists every room we are in now: a conversation each, and none for a room we
  // are no longer in (removed while this tab was away).
  function syncRooms(frame) {
    state.roomsOn = (frame.features ?? []).includes("rooms");
    $("join-form").hidden = !state.roomsOn;
    const now = new Set([LOBBY]);
    for (const r of frame.rooms ?? []) {
      const key = state.convs.roomKey(r.name);
      state.convs.get(key).info = roomInfo(r);
      now.add(key);
    }
    for (const c of state.convs.rooms()) if (!now.has(c.key)) state.convs.drop(c.key);
    if (!state.convs.byKey.has(state.active)) show(LOBBY);
    else if (state.loggedIn) renderTopic();
    renderSidebar();
  }

  function renderTopic() {
    const info = state.convs.get(state.active).info;
    $("conv-topic").textContent = info?.topic ? `Topic: ${info.topic}` : "";
    $("conv-topic").hidden = !info?.topic;
  }

  // An event kept in its room by seq, as a message is: shown once, in order.
  function keepEvent(key, ev) {
    const text = eventText(ev);
    const conv = state.convs.get(key);
    if (text === null || !conv.add({ ...ev, text })) return;
    if (key !== state.active) return;
    const stick = nearEnd();
    insertBySeq($("log"), eventItem(ev, text));
    if (stick) scrollToEnd();
  }

  function roomEvent(f) {
    seen(f.seq);
    const key = state.convs.roomKey(f.room);
    if (!state.convs.byKey.has(key)) {
      if (f.event === "invite" && f.user && same(f.user, state.me)) {
        notice(state.active, `${f.by} invites you to # ${f.room}: /join ${f.room}`);
      }
      return; // a room we are not in
    }
    const conv = state.convs.get(key);
    // A replay comes after login_ok's rooms, which are newer than what it replays.
    if (!state.replaying && conv.info) applyEvent(conv.info, f);
    keepEvent(key, f);
    if (removesMe(f, state.me)) {
      leftRoom(key, `${eventText(f)}: you are no longer in ${conv.title}`);
    } else if (key === state.active) {
      renderMembers();
      renderTopic();
    }
  }

  function roomInfoReply(f) {
    seen(f.seq);
    const req = state.roomRequests.get(f.id);
    state.roomRequests.delete(f.id);
    const key = state.convs.roomKey(f.info.name);
    if (req?.kind === "mode") {
      const info = roomInfo(f.info);
      if (state.convs.byKey.has(key)) state.convs.get(key).info = info;
      notice(state.active, `# ${info.name} has modes ${info.modes || "(none)"}.`);
    } else if (req?.kind === "join") {
      const conv = state.convs.get(key);
      conv.info = roomInfo(f.info);
      if (f.seq != null) {
        const ts = Date.now() / 1000;
        const ev = { event: "join", room: f.info.name, by: state.me, seq: f.seq, ts };
        conv.add({ ...ev, text: eventText(ev) });
      }
      show(key);
      closePanels(); // joined from the form in the phone's panel: the room is what to see
      $("message").focus();
    } else if (state.convs.byKey.has(key)) {
      state.convs.get(key).info = roomInfo(f.info);
      const info = state.convs.get(key).info;
      const topic = info.topic ? `Topic of # ${info.name}: ${info.topic}` : null;
      notice(state.active, topic ?? `# ${info.name} has no topic.`);
      if (key === state.active) renderMembers();
    }
  }

  function roomAck(f) {
    const req = state.roomRequests.get(f.id);
    state.roomRequests.delete(f.id);
    const key = state.convs.roomKey(f.room);
    if (f.command === "part") {
      leftRoom(key, `You left # ${f.room}.`);
      return;
    }
    if (!state.convs.byKey.has(key)) return;
    const ev = { room: f.room, by: state.me, seq: f.seq, ts: Date.now() / 1000 };
    if (f.command === "topic") Object.assign(ev, { event: "topic", topic: req.topic });
    else if (f.command === "invite") Object.assign(ev, { event: "invite", user: f.to });
    else if (f.command === "mode") {
      Object.assign(ev, { event: "mode", modes: req.modes, args: req.args });
    } else if (MODERATION.has(f.command)) {
      // Ours: the ack stands for the event the others get (docs/PROTOCOL.md §Events).
      Object.assign(ev, { event: f.command, user: f.to ?? req.user });
      if (req.reason) ev.reason = req.reason;
    } else return;
    if (f.seq == null) {
      // Nothing changed (docs/PROTOCOL.md: an ack without seq).
      const why = { invite: "is in", unban: "was not banned from", unmute: "was not muted in" };
      const who = f.to ?? req.user;
      const text = why[f.command] ? `${who} ${why[f.command]} # ${f.room}.` : "Nothing changed.";
      notice(state.active, text);
      return;
    }
    applyEvent(state.convs.get(key).info, ev);
    keepEvent(key, ev);
    if (key === state.active) {
      renderMembers();
      renderTopic();
    }
  }

  function leftRoom(key, text) {
    state.convs.drop(key);
    if (state.active === key) show(LOBBY);
    else renderSidebar();
    notice(state.active, text);
  }

  function banList(f) {
    if (f.bans.length === 0) notice(state.active, `Nobody is banned from # ${f.room}.`);
    for (const b of f.bans) {
      const until = b.expires ? ` until ${new Date(b.expires * 1000).toLocaleString()}` : "";
      const reason = b.reason ? `: ${b.reason}` : "";
      notice(state.active, `${b.user} banned from # ${f.room} by ${b.by}${until}${reason}`);
    }
  }

  function roomList(f) {
    if (f.rooms.length === 0) notice(state.active, "There are no rooms yet: /join NAME makes one.");
    for (const r of f.rooms) {
      const members = `${r.count} member${r.count === 1 ? "" : "s"}`;
      const topic = r.topic ? `: ${r.topic}` : "";
      notice(state.active, `# ${r.name} (${members}${r.joined ? ", joined" : ""})${topic}`);
    }
  }

  // /join /part /topic /invite /rooms, and the join and leave buttons.
  function roomCommand(action, conv) {
    if (!state.roomsOn) {
      notice(state.active, "This server has no rooms: everyone is in # lobby.");
      return true;
    }
    const id = `r${state.nextId++}`;
    const here = conv && conv.kind === "room" && conv.key !== LOBBY ? conv.key.slice(5) : null;
    let frame;
    switch (action.kind) {
      case "join":
        frame = { command: "join", room: action.room };
        if (action.key) frame.key = action.key;
        break;
      case "part":
        frame = { command: "part", room: action.room ?? here };
        if (action.reason) frame.reason = action.reason;
        break;
      case "topic":
        frame = { command: "topic", room: here };
        if (action.topic !== null) frame.topic = action.topic;
        break;
      case "invite":
        frame = { command: "invite", room: here, user: action.user };
        break;
      case "bans":
        frame = { command: "bans", room: here };
        break;
      case "mode":
        frame = { command: "mode", room: here };
        if (action.modes) Object.assign(frame, { modes: action.modes, args: action.args });
        break;
      case "moderate":
        frame = moderationFrame(action, here);
        break;
      default:
        frame = { command: "rooms" };
    }
    if ("room" in frame && frame.room === null) {
      composerError(`Open a room first: # lobby has no ${action.kind}.`);
      return false;
    }
    if (!conn.send({ ...frame, id })) {
      composerError("Offline: try again once reconnected.");
      return false;
    }
    state.roomRequests.set(id, {
      kind: action.kind,
      topic: action.topic ?? null,
      user: action.user ?? null,
      reason: action.reason ?? null,
      modes: frame.modes ?? null,
      args: frame.args ?? [],
    });
    return true;
  }

  const room = { syncRooms, renderTopic, roomEvent, roomInfoReply, roomAck, roomList };
  return { ...room, banList, roomCommand };
}
