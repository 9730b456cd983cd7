// Names: one colour per name, the same in every tab and every session (a hash of the
// name ignoring case, as the server compares names), and Tab completion.

export function nameHue(name) {
  let h = 2166136261;
  for (const ch of name.toLowerCase()) {
    h ^= ch.codePointAt(0);
    h = Math.imul(h, 16777619) >>> 0;
  }
  return h % 360;
}

// The colour is set through CSSOM (allowed by the page's CSP, unlike a style
// attribute); style.css turns the hue into a colour with enough contrast.
export function paintName(el, name) {
  el.style.setProperty("--hue", String(nameHue(name)));
  el.classList.add("name");
}

// Tab completion: the word before the caret, completed from `candidates` (names, and
// commands when it is the first word). Returns null if nothing matches, so that Tab
// then moves focus on as usual (keyboard users are never trapped in the input).
export class Completer {
  constructor() {
    this.reset();
  }

  reset() {
    this.state = null;
  }

  complete(input, names, commands) {
    const value = input.value;
    const caret = input.selectionStart ?? value.length;
    if (this.state !== null && this.state.value === value && this.state.caret === caret) {
      const s = this.state; // Tab again: the next match
      s.index = (s.index + 1) % s.matches.length;
      return this.apply(input, s);
    }
    const start = value.lastIndexOf(" ", caret - 1) + 1;
    const word = value.slice(start, caret);
    if (word === "") return null;
    const pool = start === 0 && word.startsWith("/") ? commands : names;
    const bare = word.startsWith("@") ? word.slice(1) : word;
    const lower = bare.toLowerCase();
    const matches = pool.filter((n) => n.toLowerCase().startsWith(lower));
    if (matches.length === 0) return null;
    const s = { start, end: caret, matches, index: 0, first: start === 0, pool };
    return this.apply(input, s);
  }

  apply(input, s) {
    const value = s.base ?? input.value;
    s.base = value;
    let word = s.matches[s.index];
    if (s.pool.length && s.first && !word.startsWith("/")) word += ":";
    const insert = `${word} `;
    const text = value.slice(0, s.start) + insert + value.slice(s.end);
    input.value = text;
    const caret = s.start + insert.length;
    input.setSelectionRange(caret, caret);
    s.value = text;
    s.caret = caret;
    this.state = s;
    return word;
  }
}
