// The conversations the page holds: the room(s) and one per DM partner, each with its
// messages by seq, so that a message is shown once however it arrives (live, in a
// replay after a reconnect, or in a history page) — docs/PROTOCOL.md §Message log.
//
// Rooms (docs/PROTOCOL.md §Rooms): the lobby and each room the user is in, keyed
// `room:NAME` with the server's spelling of the name; `info` is a room's members,
// roles and topic (rooms.js), null for the lobby, whose members are the users online.

export const LOBBY = "room:lobby";

export class Conversation {
  constructor(key, kind, title, peer = null) {
    this.key = key;
    this.kind = kind; // "room" or "dm"
    this.title = title;
    this.peer = peer; // the other user of a DM
    this.bySeq = new Map(); // seq -> message
    this.unread = 0;
    this.hasMore = true; // older messages may exist (history paging)
    this.loading = false;
    this.loaded = false; // its first history page was asked for
    this.info = null; // a room's members, roles and topic (rooms.js)
  }

  get oldest() {
    let min = null;
    for (const seq of this.bySeq.keys()) if (min === null || seq < min) min = seq;
    return min;
  }

  // True if this seq is new here (then it is kept).
  add(msg) {
    if (msg.seq == null) return true; // --history off: nothing to match on
    if (this.bySeq.has(msg.seq)) return false;
    this.bySeq.set(msg.seq, msg);
    return true;
  }
}

export class Conversations {
  constructor() {
    this.byKey = new Map();
    this.get(LOBBY);
  }

  get(key) {
    let c = this.byKey.get(key);
    if (c === undefined) {
      if (key.startsWith("room:")) {
        c = new Conversation(key, "room", `# ${key.slice(5)}`);
      } else {
        const peer = key.slice(3);
        c = new Conversation(key, "dm", `@ ${peer}`, peer);
      }
      this.byKey.set(key, c);
    }
    return c;
  }

  // A DM's conversation is keyed by the other user, ignoring case.
  dmKey(peer) {
    for (const c of this.byKey.values()) {
      if (c.kind === "dm" && c.peer.toLowerCase() === peer.toLowerCase()) return c.key;
    }
    return `dm:${peer}`;
  }

  // A room's conversation, found ignoring case as the server compares room names.
  roomKey(name) {
    if (name == null) return LOBBY;
    for (const c of this.byKey.values()) {
      if (c.kind === "room" && c.key.slice(5).toLowerCase() === name.toLowerCase()) return c.key;
    }
    return `room:${name}`;
  }

  keyFor(msg, me) {
    if (msg.kind === "dm" || msg.type === "dm") {
      const mine = msg.from.toLowerCase() === me.toLowerCase();
      return this.dmKey(mine ? msg.to : msg.from);
    }
    return this.roomKey(msg.room); // no room: the lobby's
  }

  // The lobby first, then the other rooms ignoring case.
  rooms() {
    const rooms = [...this.byKey.values()].filter((c) => c.kind === "room" && c.key !== LOBBY);
    rooms.sort((a, b) => a.key.toLowerCase().localeCompare(b.key.toLowerCase()));
    return [this.get(LOBBY), ...rooms];
  }

  drop(key) {
    if (key !== LOBBY) this.byKey.delete(key);
  }

  dms() {
    return [...this.byKey.values()].filter((c) => c.kind === "dm");
  }
}
