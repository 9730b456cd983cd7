// DOM building: messages, the side list and the member list. Text is always set as
// text (textContent), never parsed as HTML.

import { paintName } from "./names.js";

export const $ = (id) => document.getElementById(id);

function el(tag, cls, text) {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text != null) e.textContent = text;
  return e;
}

const ACTION = /^\u0001ACTION (.*?)\u0001?$/s; // /me, as IRC clients send it

function clock(ts) {
  const d = new Date(ts * 1000);
  const t = el("time", "ts", d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" }));
  t.dateTime = d.toISOString();
  t.title = d.toLocaleString();
  return t;
}

// One message as a list item; data-seq for ordering, de-duplication and tests.
export function messageItem(msg) {
  const li = el("li", "msg");
  if (msg.seq != null) li.dataset.seq = String(msg.seq);
  if (msg.cid) li.dataset.cid = msg.cid;
  li.append(clock(msg.ts ?? Date.now() / 1000), " ");
  const action = ACTION.exec(msg.message);
  const who = el("span", "from", action ? `* ${msg.from}` : msg.from);
  paintName(who, msg.from);
  li.append(who);
  if (action) {
    li.classList.add("action");
    li.append(" ", el("span", "text", action[1]));
  } else {
    li.append(el("span", "sep", ": "), el("span", "text", msg.message));
  }
  if (msg.pending) {
    li.classList.add("pending");
    li.append(el("span", "state", " (sending…)"));
  }
  return li;
}

export function markSent(li, seq) {
  li.classList.remove("pending", "failed");
  li.dataset.seq = String(seq);
  li.querySelector(".state")?.remove();
}

export function markFailed(li, why) {
  li.classList.remove("pending");
  li.classList.add("failed");
  li.querySelector(".state")?.remove();
  li.append(el("span", "state", ` (not sent: ${why})`));
}

export function noticeItem(text) {
  return el("li", "notice", text);
}

// A room's event (a join, a part, a topic...): a notice kept in seq order like a message.
export function eventItem(ev, text) {
  const li = el("li", "notice event");
  li.dataset.seq = String(ev.seq);
  li.append(clock(ev.ts ?? Date.now() / 1000), " ", el("span", "text", text));
  return li;
}

// Insert in seq order: messages arrive in order, so this looks at the last few.
export function insertBySeq(log, li) {
  const seq = Number(li.dataset.seq);
  let before = null;
  for (let n = log.lastElementChild; n !== null; n = n.previousElementSibling) {
    if (n.classList.contains("pending")) {
      before = n;
      continue;
    }
    if (n.dataset.seq === undefined) continue; // a notice: stays where it was said
    if (Number(n.dataset.seq) > seq) before = n;
    else break;
  }
  log.insertBefore(li, before);
}

// A side list entry: a button (focusable, labelled with its unread count).
export function conversationButton(conv, active, onPick) {
  const li = el("li");
  const b = el("button", "conv");
  b.type = "button";
  b.dataset.key = conv.key;
  b.append(el("span", "title", conv.title));
  if (conv.unread > 0 && !active) {
    b.append(el("span", "unread", String(conv.unread)));
    b.setAttribute("aria-label", `${conv.title}, ${conv.unread} unread`);
  }
  if (active) b.setAttribute("aria-current", "true");
  b.addEventListener("click", () => onPick(conv.key));
  li.append(b);
  return li;
}

// actions: [{verb, label}] a room operator may do to the member (moderation buttons).
export function memberButton(name, me, onPick, role = null, away = false, actions = [], onAct) {
  const li = el("li");
  const b = el("button", "member");
  b.type = "button";
  const n = el("span", null, name);
  paintName(n, name);
  b.append(n);
  if (name.toLowerCase() === me.toLowerCase()) b.append(el("span", "you", " (you)"));
  if (role) b.append(el("span", "you", ` (${role})`));
  if (away) b.append(el("span", "you", " (away)"));
  b.setAttribute("aria-label", `Write to ${name}`);
  b.addEventListener("click", () => onPick(name));
  li.append(b);
  if (actions.length) {
    const tools = el("span", "mod");
    for (const { verb, label } of actions) {
      const t = el("button", "mod-action", label);
      t.type = "button";
      t.dataset.verb = verb;
      t.setAttribute("aria-label", `${label} ${name}`);
      t.addEventListener("click", () => onAct(verb, name));
      tools.append(t);
    }
    li.append(tools);
  }
  return li;
}
