// The composer's /commands, as IRC users know them. parse() turns a line into an
// action for app.js; it sends nothing itself.

export const COMMANDS = ["/help", "/me", "/msg", "/query", "/who", "/join", "/part", "/quit"];

export const HELP = [
  "/me TEXT — an action (* you TEXT)",
  "/msg NAME TEXT — a direct message; /query NAME opens the conversation",
  "/who — who is here",
  "/join #ROOM, /part — rooms (the server has one room for now: # lobby)",
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
    case "/join":
    case "/part":
      return {
        kind: "note",
        text: "Rooms are not on this server yet: everyone is in # lobby.",
      };
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
