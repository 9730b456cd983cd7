// The composer's /commands, as IRC users know them. parse() turns a line into an
// action for app.js; it sends nothing itself.

export const COMMANDS = [
  "/help", "/me", "/msg", "/query", "/who",
  "/join", "/part", "/topic", "/invite", "/rooms", "/quit",
  "/kick", "/ban", "/unban", "/bans", "/mute", "/unmute",
  "/op", "/deop", "/voice", "/devoice", "/mode",
];

export const HELP = [
  "/me TEXT — an action (* you TEXT)",
  "/msg NAME TEXT — a direct message; /query NAME opens the conversation",
  "/who — who is here",
  "/join ROOM [KEY] — join (or create) a room; /part [ROOM] [REASON] — leave it",
  "/topic [TEXT] — read or set the room's topic; /invite NAME — invite to the room",
  "/rooms — the rooms there are",
  "/quit — log out",
  "Moderation, by the room's operators (as the chat REPL's; the member list has buttons too):",
  "/kick NAME [REASON]; /ban NAME [10m|2h|1d] [REASON]; /unban NAME; /bans",
  "/mute NAME [10m] [REASON]; /unmute NAME; /op /deop /voice /devoice NAME",
  "/mode [+m-t ... ARGS] — read or change the room's modes",
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
    case "/bans":
      return rest.trim() ? usage("/bans") : { kind: "bans" };
    case "/mode": {
      const words = rest.trim().split(/\s+/).filter((w) => w !== "");
      if (words.length && !/^[+-]/.test(words[0])) return usage("/mode [+MODES-MODES [ARGS]]");
      return { kind: "mode", modes: words[0] ?? null, args: words.slice(1) };
    }
    case "/kick":
    case "/ban":
    case "/unban":
    case "/mute":
    case "/unmute":
    case "/op":
    case "/deop":
    case "/voice":
    case "/devoice":
      return moderate(cmd.slice(1), rest);
    default:
      return { kind: "error", text: `Unknown command ${cmd}; /help lists them.` };
  }
}

const TIMED = new Set(["ban", "mute"]);
const REASONED = new Set(["kick", "ban", "mute"]);
const UNITS = { s: 1, m: 60, h: 3600, d: 86400 };

// "90", "90s", "10m", "2h", "1d" in seconds; null for anything else.
export function durationOf(word) {
  const m = /^(\d+)([smhd]?)$/i.exec(word);
  return m ? Number(m[1]) * (UNITS[m[2].toLowerCase()] ?? 1) : null;
}

// /kick NAME [REASON], /ban NAME [DURATION] [REASON], /op NAME, ... (as the REPL's).
function moderate(verb, rest) {
  const m = /^@?(\S+)\s*(.*)$/s.exec(rest.trim());
  const timed = TIMED.has(verb) ? " [10m|2h|1d]" : "";
  const shape = `/${verb} NAME${timed}${REASONED.has(verb) ? " [REASON]" : ""}`;
  if (!m) return usage(shape);
  let more = m[2].trim();
  let duration = null;
  if (TIMED.has(verb) && more) {
    const [first, ...after] = more.split(/\s+/);
    duration = durationOf(first);
    if (duration !== null) more = after.join(" ");
  }
  if (more && !REASONED.has(verb)) return usage(shape);
  return { kind: "moderate", verb, user: m[1], duration, reason: more || null };
}

function usage(text) {
  return { kind: "error", text: `Usage: ${text}` };
}
