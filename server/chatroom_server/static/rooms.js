// Rooms (docs/PROTOCOL.md §Rooms): what the page keeps of each room it is in (members,
// roles, topic, modes), kept up to date from the room's `room_event`s, and the words
// each event is shown with. Pure functions: app.js does the sending and the drawing.

export const LOBBY_NAME = "lobby";

const ROLE_MARK = { owner: "owner", op: "op", voice: "voice" };

// A room's info as login_ok and room_info give it; `members` sorted ignoring case.
export function roomInfo(info) {
  return {
    name: info.name,
    topic: info.topic ?? "",
    topicBy: info.topic_by ?? null,
    modes: info.modes ?? "",
    members: [...(info.members ?? [])],
    roles: { ...(info.roles ?? {}) },
  };
}

const same = (a, b) => a.toLowerCase() === b.toLowerCase();

function sorted(names) {
  return names.sort((a, b) => a.toLowerCase().localeCompare(b.toLowerCase()));
}

// The info after an event, as the SDK's rooms.apply_event does it. Modes other than
// the roles are kept as the server last said them (a `mode` or `members` query).
export function applyEvent(info, ev) {
  const gone = (name) => {
    info.members = info.members.filter((m) => !same(m, name));
    for (const u of Object.keys(info.roles)) if (same(u, name)) delete info.roles[u];
  };
  switch (ev.event) {
    case "join":
      if (!info.members.some((m) => same(m, ev.by))) {
        info.members.push(ev.by);
        sorted(info.members);
      }
      break;
    case "part":
      gone(ev.by);
      break;
    case "kick":
    case "ban":
      if (ev.user) gone(ev.user);
      break;
    case "topic":
      info.topic = ev.topic ?? "";
      info.topicBy = info.topic ? ev.by : null;
      break;
    case "mode":
      applyRoles(info, ev.modes ?? "", ev.args ?? []);
      break;
    default:
      break; // invite, mute...: nothing the page draws changes
  }
  return info;
}

// +o/-o and +v/-v name a member; the other letters are the room's own flags.
function applyRoles(info, modes, args) {
  let add = true;
  let next = 0;
  for (const c of modes) {
    if (c === "+" || c === "-") {
      add = c === "+";
      continue;
    }
    const takesArg = c === "o" || c === "v" || (add && (c === "k" || c === "l"));
    const arg = takesArg ? args[next++] : undefined;
    if ((c === "o" || c === "v") && arg) {
      const member = info.members.find((m) => same(m, arg)) ?? arg;
      const role = c === "o" ? "op" : "voice";
      if (add && info.roles[member] !== "owner") info.roles[member] = role;
      else if (!add && info.roles[member] === role) delete info.roles[member];
    }
  }
}

export function roleOf(info, name) {
  for (const [u, r] of Object.entries(info.roles)) if (same(u, name)) return ROLE_MARK[r] ?? null;
  return null;
}

// The line an event is shown as, in the room it happened in.
export function eventText(ev) {
  const reason = ev.reason ? ` (${ev.reason})` : "";
  switch (ev.event) {
    case "join":
      return `${ev.by} joined`;
    case "part":
      return `${ev.by} left${reason}`;
    case "topic":
      return ev.topic ? `${ev.by} set the topic: ${ev.topic}` : `${ev.by} cleared the topic`;
    case "mode":
      return `${ev.by} set mode ${[ev.modes, ...(ev.args ?? [])].join(" ")}`;
    case "invite":
      return `${ev.by} invited ${ev.user}`;
    case "kick":
      return `${ev.by} removed ${ev.user}${reason}`;
    case "ban":
      // A ban of an address never says which (docs/PROTOCOL.md §Bans by address).
      if (ev.address) return `${ev.by} banned an address${reason}`;
      return `${ev.by} banned ${ev.user}${reason}`;
    case "unban":
      if (ev.address) return `${ev.by} lifted a ban of an address`;
      return `${ev.by} unbanned ${ev.user}`;
    case "mute":
      return `${ev.by} muted ${ev.user}${reason}`;
    case "unmute":
      return `${ev.by} unmuted ${ev.user}`;
    default:
      return null; // an event this page does not know: not shown (docs/PROTOCOL.md)
  }
}

// Whether an event takes `me` out of the room (a kick or a ban naming them).
export function removesMe(ev, me) {
  return (ev.event === "kick" || ev.event === "ban") && ev.user != null && same(ev.user, me);
}
