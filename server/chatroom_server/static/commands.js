// The composer's /commands, as IRC users know them. parse() turns a line into an
// action for app.js; it sends nothing itself.

export const COMMANDS = [
  "/help", "/me", "/msg", "/query", "/who",
  "/join", "/part", "/topic", "/invite", "/rooms", "/quit",
];

export const HELP = [
  "/me TEXT — an action (* you TEXT)",
  "/msg NAME TEXT — a direct message; /query NAME opens the conversation",
  "/who — who is here",
  "/join ROOM [KEY] — join (or create) a room; /part [ROOM] [REASON] — leave it",
  "/topic [TEXT] — read or set the room's topic; /invite NAME — invite to the room",
  "/rooms — the rooms there are",
  "/quit — log out",
  "Tab completes names and commands; Alt+↑ and Alt+↓ change conversation.",
];

export function parse(line) {
  const text = line.trim() === "" ? "" : line;
  if (text === "") return { kind: "empty" };
  if (!text.startsWith("/") || text.startsWith("//")) {
    return { kind: "say", text: text.startsWith("//") ? text.slice(1) : text };
  }
  const space = text.indexOf(" ");
  const cmd = (space < 0 ? text : text.slice(0, space)).toLowerCase();
  const rest = space < 0 ? "" : text.slice(space + 1);
  switch (cmd) {
    case "/me":
      return rest.trim() ? { kind: "say", text: `\u0001ACTION ${rest}\u0001` } : usage("/me TEXT");
    case "/msg": {
      const m = /^(\S+)\s+(.+)$/s.exec(rest);
      return m ? { kind: "dm", to: m[1].replace(/^@/, ""), text: m[2] } : usage("/msg NAME TEXT");
    }
    case "/query": {
      const to = rest.trim().replace(/^@/, "");
      return to ? { kind: "open", to } : usage("/query NAME");
    }
    case "/who":
      return { kind: "who" };
    case "/join": {
      const m = /^#?(\S+)(?:\s+(\S+))?\s*$/.exec(rest);
      return m ? { kind: "join", room: m[1], key: m[2] ?? null } : usage("/join ROOM [KEY]");
    }
    case "/part": {
      // As IRC: `/part #dev bye`, `/part dev`; `/part see you` leaves the open room.
      const words = rest.trim();
      const m = /^#(\S+)\s*(.*)$/s.exec(words);
      if (m) return { kind: "part", room: m[1], reason: m[2] || null };
      if (/^\S+$/.test(words)) return { kind: "part", room: words, reason: null };
      return { kind: "part", room: null, reason: words || null };
    }
    case "/topic":
      return { kind: "topic", topic: rest.trim() === "" ? null : rest.trim() };
    case "/invite": {
      const user = rest.trim().replace(/^@/, "");
      return /^\S+$/.test(user) ? { kind: "invite", user } : usage("/invite NAME");
    }
    case "/rooms":
      return { kind: "rooms" };
    case "/quit":
      return { kind: "quit" };
    case "/help":
      return { kind: "help" };
    default:
      return { kind: "error", text: `Unknown command ${cmd}; /help lists them.` };
  }
}

function usage(text) {
  return { kind: "error", text: `Usage: ${text}` };
}
