// HTTP/1.1 over a unix socket, by hand on node:net: what the client needs of HTTP and no more.
// node:http costs about as much per request as execroot's whole create (its Agent, its
// IncomingMessage streams, its header objects): a create took 0.52 ms at the client of which
// 0.14 ms was execroot's. Here a request is one write and an answer one parse of the bytes.
//
// Connections are kept (keep-alive) and reused, the most recently used first; one request at a
// time per connection (no pipelining), so concurrent requests open more. Idle ones are unref'd
// and do not keep the process alive.

import net from "node:net";

const CRLF2 = Buffer.from("\r\n\r\n");
const CRLF = Buffer.from("\r\n");

/** A malformed answer: the caller turns it into its own error. */
export class ProtocolError extends Error {}

/**
 * Parse one answer out of `buf` (a Buffer of everything read so far). Returns `null` while
 * incomplete, else `{ status, headers, body, keepAlive }`; throws ProtocolError on bytes that
 * are not an HTTP/1.1 answer. `ended`: the server closed the connection (an answer without
 * length runs to the close).
 */
export function parseAnswer(buf, ended = false) {
  let start = 0;
  for (;;) {
    const end = buf.indexOf(CRLF2, start);
    if (end < 0) {
      if (buf.length - start > 64 * 1024) throw new ProtocolError("answer headers over 64 KiB");
      return null;
    }
    const lines = buf.toString("latin1", start, end).split("\r\n");
    const m = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(lines[0]);
    if (!m) throw new ProtocolError(`not an HTTP answer: ${JSON.stringify(lines[0].slice(0, 80))}`);
    const status = Number(m[1]);
    const headers = {};
    for (const line of lines.slice(1)) {
      const i = line.indexOf(":");
      if (i <= 0) throw new ProtocolError(`bad header line ${JSON.stringify(line.slice(0, 80))}`);
      headers[line.slice(0, i).trim().toLowerCase()] = line.slice(i + 1).trim();
    }
    const bodyStart = end + 4;
    // 1xx (100 Continue): an interim answer, the real one follows.
    if (status < 200) {
      start = bodyStart;
      continue;
    }
    const keepAlive = !/(^|,)\s*close\s*(,|$)/i.test(headers.connection || "");
    if (/chunked/i.test(headers["transfer-encoding"] || "")) {
      const body = dechunk(buf, bodyStart);
      return body && { status, headers, body, keepAlive };
    }
    if (headers["content-length"] !== undefined) {
      const n = Number(headers["content-length"]);
      if (!Number.isSafeInteger(n) || n < 0) throw new ProtocolError(`bad content-length ${headers["content-length"]}`);
      if (buf.length - bodyStart < n) return null;
      return { status, headers, body: buf.subarray(bodyStart, bodyStart + n), keepAlive };
    }
    // No length (204, 304 have no body; anything else runs to the close).
    if (status === 204 || status === 304) return { status, headers, body: Buffer.alloc(0), keepAlive };
    if (!ended) return null;
    return { status, headers, body: buf.subarray(bodyStart), keepAlive: false };
  }
}

/** The body of a chunked answer whose chunks start at `at`, or null while incomplete. */
function dechunk(buf, at) {
  const parts = [];
  for (;;) {
    const eol = buf.indexOf(CRLF, at);
    if (eol < 0) return null;
    const size = parseInt(buf.toString("latin1", at, eol).split(";")[0].trim(), 16);
    if (!Number.isSafeInteger(size) || size < 0) throw new ProtocolError("bad chunk size");
    if (size === 0) {
      // The last chunk; then trailers (none are expected) and an empty line.
      if (buf.length < eol + 4) return null;
      if (buf[eol + 2] === 13 && buf[eol + 3] === 10) return Buffer.concat(parts);
      return buf.indexOf(CRLF2, eol + 2) < 0 ? null : Buffer.concat(parts);
    }
    if (buf.length < eol + 2 + size + 2) return null;
    parts.push(buf.subarray(eol + 2, eol + 2 + size));
    if (!buf.subarray(eol + 2 + size, eol + 4 + size).equals(CRLF)) throw new ProtocolError("chunk not followed by CRLF");
    at = eol + 4 + size;
  }
}

/** Kept connections to one unix socket. */
export class Transport {
  constructor(socketPath) {
    this.socketPath = socketPath;
    this.idle = [];
  }

  /** Close the kept connections (later requests open new ones). */
  close() {
    for (const s of this.idle.splice(0)) s.destroy();
  }

  /**
   * Send one request; resolves `{ status, headers, body }` (body a Buffer). Rejects with the
   * socket's error, a ProtocolError, or `timeoutError()` after `timeoutMs`.
   */
  send(method, path, payload, timeoutMs, timeoutError) {
    const head =
      `${method} ${path} HTTP/1.1\r\nHost: localhost\r\n` +
      (payload ? `Content-Type: application/json\r\nContent-Length: ${payload.length}\r\n` : method === "GET" ? "" : "Content-Length: 0\r\n") +
      "\r\n";
    const bytes = payload ? Buffer.concat([Buffer.from(head, "latin1"), payload]) : Buffer.from(head, "latin1");
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => fail(timeoutError(), true), timeoutMs);
      let sock = null;
      let done = false;
      const fail = (e, destroy) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        if (sock) {
          detach(sock);
          if (destroy) sock.destroy();
        }
        reject(e);
      };
      const attempt = (reused) => {
        const s = reused || net.createConnection(this.socketPath);
        if (reused) detach(s);
        sock = s;
        let buf = Buffer.alloc(0);
        let got = false;
        const finish = (ended) => {
          let a;
          try {
            a = parseAnswer(buf, ended);
          } catch (e) {
            return fail(e, true);
          }
          if (!a) {
            if (ended) fail(new Error("the connection closed before the answer was complete"), true);
            return;
          }
          done = true;
          clearTimeout(timer);
          detach(s);
          if (a.keepAlive && !ended && !s.destroyed) this.park(s);
          else s.destroy();
          resolve(a);
        };
        const onData = (c) => {
          got = true;
          buf = buf.length ? Buffer.concat([buf, c]) : c;
          finish(false);
        };
        // A kept connection the server closed while it was idle: the request is sent once more
        // on a new one, when nothing of an answer came back and sending it twice is harmless
        // (GET, DELETE: a create or commit the service may have read before it went down is
        // never repeated behind the caller's back).
        const lost = (e) => {
          if (done) return;
          if (reused && !got && (method === "GET" || method === "DELETE")) {
            detach(s);
            s.destroy();
            return attempt(null);
          }
          if (got && !e) return finish(true);
          fail(e || new Error("the connection closed before the answer was complete"), true);
        };
        s.on("data", onData);
        s.on("error", (e) => lost(e));
        s.on("end", () => lost(null));
        s.on("close", () => lost(null));
        s.ref();
        s.write(bytes);
      };
      attempt(this.idle.pop() || null);
    });
  }

  /** Keep `s` for the next request. */
  park(s) {
    s.unref();
    const gone = () => {
      const i = this.idle.indexOf(s);
      if (i >= 0) this.idle.splice(i, 1);
      detach(s);
      s.destroy();
    };
    s.on("error", gone);
    s.on("end", gone);
    s.on("close", gone);
    s.on("data", gone);
    this.idle.push(s);
  }
}

/** Remove the handlers of whoever used `s` last. */
function detach(s) {
  for (const ev of ["data", "error", "end", "close"]) s.removeAllListeners(ev);
  // An error after this point (a reset of a destroyed socket) must not go unhandled.
  s.on("error", () => {});
}
