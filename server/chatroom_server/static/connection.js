// One WebSocket to the page's own host, reopened after it drops (docs/WEB.md).
//
// It knows nothing of the chat: frames in and out as objects, and three callbacks.
// Reconnecting waits 0.5 s, then doubles up to 10 s, with jitter, so that a server
// restart does not see every tab at the same instant.

export class Connection {
  constructor({ onOpen, onFrame, onClose }) {
    this.onOpen = onOpen;
    this.onFrame = onFrame;
    this.onClose = onClose;
    this.ws = null;
    this.stopped = false;
    this.delay = 500;
    this.timer = null;
    this.keepalive = null;
  }

  get url() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}/ws`;
  }

  get open() {
    return this.ws !== null && this.ws.readyState === WebSocket.OPEN;
  }

  connect() {
    this.stopped = false;
    clearTimeout(this.timer);
    const ws = new WebSocket(this.url);
    this.ws = ws;
    ws.onopen = () => {
      this.delay = 500;
      // The server closes a logged-in connection silent for 120 s: say something.
      clearInterval(this.keepalive);
      this.keepalive = setInterval(() => this.send({ command: "ping" }), 30000);
      this.onOpen();
    };
    ws.onmessage = (event) => {
      let frame;
      try {
        frame = JSON.parse(event.data);
      } catch {
        console.warn("not JSON from the server", event.data);
        return;
      }
      this.onFrame(frame);
    };
    ws.onclose = () => {
      if (this.ws !== ws) return; // an older socket, replaced already
      clearInterval(this.keepalive);
      this.ws = null;
      const retry = !this.stopped;
      const wait = retry ? this.delay * (0.75 + Math.random() / 2) : 0;
      if (retry) {
        this.timer = setTimeout(() => this.connect(), wait);
        this.delay = Math.min(this.delay * 2, 10000);
      }
      this.onClose(retry, wait);
    };
  }

  send(frame) {
    if (!this.open) return false;
    this.ws.send(JSON.stringify(frame));
    return true;
  }

  // Close this socket and reconnect after the usual wait.
  drop() {
    if (this.ws !== null) this.ws.close(1000);
  }

  // No more reconnecting (logged out, or the session moved to another tab).
  stop() {
    this.stopped = true;
    clearTimeout(this.timer);
    clearInterval(this.keepalive);
    if (this.ws !== null) this.ws.close(1000);
  }
}
