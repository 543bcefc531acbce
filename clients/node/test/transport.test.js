// The client's HTTP/1.1 transport against a fake server on a unix socket: the protocol cases a
// real `execroot serve` does not produce on demand (chunked answers, answers cut into single
// bytes, an idle kept connection closed by the server, a server that never answers, bytes that
// are not HTTP). Needs no root.
import { test, after } from "node:test";
import assert from "node:assert/strict";
import fs from "node:fs";
import net from "node:net";
import os from "node:os";
import path from "node:path";
import { ExecrootClient, ExecrootError } from "../index.js";

const dir = fs.mkdtempSync(path.join(os.tmpdir(), "execroot-transport-"));
after(() => fs.rmSync(dir, { recursive: true, force: true }));
let n = 0;

/**
 * A server that hands each request (its head, as a string) to `answer(head, sock)`, which
 * writes what it likes. Resolves `{ client, server, requests }`.
 */
async function fake(answer) {
  const socketPath = path.join(dir, `s${n++}.sock`);
  const requests = [];
  const server = net.createServer((sock) => {
    let buf = "";
    sock.on("data", (c) => {
      buf += c.toString("latin1");
      for (;;) {
        const end = buf.indexOf("\r\n\r\n");
        if (end < 0) return;
        const head = buf.slice(0, end);
        const len = Number(/content-length: (\d+)/i.exec(head)?.[1] || 0);
        if (buf.length < end + 4 + len) return;
        const body = buf.slice(end + 4, end + 4 + len);
        buf = buf.slice(end + 4 + len);
        requests.push({ head, body });
        answer(head, sock, body);
      }
    });
    sock.on("error", () => {});
  });
  await new Promise((r) => server.listen(socketPath, r));
  after(() => server.close());
  return { client: new ExecrootClient({ socketPath, timeoutMs: 300 }), server, requests };
}

const json = (status, obj, extra = "") => {
  const b = Buffer.from(JSON.stringify(obj));
  return `HTTP/1.1 ${status} X\r\ncontent-type: application/json\r\ncontent-length: ${b.length}\r\n${extra}\r\n${b}`;
};

test("one write per request, with its length; connections are reused", async () => {
  const { client, requests } = await fake((head, sock) => sock.write(json(200, { ok: true, version: "t", overlay: {} })));
  for (let i = 0; i < 3; i++) assert.equal((await client.health()).ok, true);
  await client.request("POST", "/v1/gc", { dryRun: true });
  assert.equal(requests.length, 4);
  assert.match(requests[0].head, /^GET \/v1\/health HTTP\/1\.1\r\nHost: localhost$/);
  assert.match(requests[3].head, /^POST \/v1\/gc HTTP\/1\.1\r\nHost: localhost\r\nContent-Type: application\/json\r\nContent-Length: 15$/);
  assert.equal(requests[3].body, '{"dryRun":true}');
  client.close();
});

test("a chunked answer, and an answer written one byte at a time", async () => {
  const body = JSON.stringify({ ok: true, version: "chunked", overlay: { available: true } });
  const chunked = `HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n${(10).toString(16)}\r\n${body.slice(0, 10)}\r\n${(body.length - 10).toString(16)}\r\n${body.slice(10)}\r\n0\r\n\r\n`;
  const { client } = await fake((head, sock) => {
    const bytes = Buffer.from(chunked);
    let i = 0;
    const drip = () => {
      if (i < bytes.length) sock.write(bytes.subarray(i, ++i), drip);
    };
    drip();
  });
  assert.equal((await client.health()).version, "chunked");
  assert.equal((await client.health()).version, "chunked", "the connection is reused after a chunked answer");
  client.close();
});

test("a 100 Continue before the answer is skipped; an error answer is an ExecrootError", async () => {
  const { client } = await fake((head, sock) =>
    sock.write("HTTP/1.1 100 Continue\r\n\r\n" + json(409, { error: { code: "conflict", message: "dirty" } })),
  );
  await assert.rejects(client.health(), (e) => e instanceof ExecrootError && e.status === 409 && e.code === "conflict" && e.message === "dirty");
  client.close();
});

test("a kept connection the server closed while idle: the next call succeeds on a new one", async () => {
  let conns = 0;
  const { client, server } = await fake((head, sock) => {
    sock.write(json(200, { ok: true, version: String(conns), overlay: {} }));
    // Closed by the server right after answering (its keep-alive ran out).
    setTimeout(() => sock.destroy(), 5);
  });
  server.on("connection", () => conns++);
  await client.health();
  await new Promise((r) => setTimeout(r, 50));
  assert.equal((await client.health()).ok, true);
  assert.equal(conns, 2);
  client.close();
});

test("a POST on a kept connection that dies before any answer is not sent again", async () => {
  let posts = 0;
  const { client } = await fake((head, sock) => {
    if (head.startsWith("POST")) {
      posts++;
      return sock.destroy();
    }
    sock.write(json(200, { ok: true, version: "k", overlay: {} }));
  });
  await client.health();
  await assert.rejects(client.request("POST", "/v1/roots", { class: "routine" }), (e) => e instanceof ExecrootError && e.code === "unreachable");
  assert.equal(posts, 1);
  assert.equal((await client.health()).ok, true, "the client is usable after");
  client.close();
});

test("Connection: close is honoured, and an answer running to the close is read whole", async () => {
  const { client, server } = await fake((head, sock) => {
    sock.end(`HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n${JSON.stringify({ ok: true, version: "eof", overlay: {} })}`);
  });
  let conns = 0;
  server.on("connection", () => conns++);
  assert.equal((await client.health()).version, "eof");
  assert.equal((await client.health()).version, "eof");
  assert.equal(conns, 2);
  client.close();
});

test("a body that is not JSON, bytes that are not HTTP, no answer, no server", async () => {
  const notJson = await fake((head, sock) => sock.write("HTTP/1.1 200 OK\r\ncontent-length: 5\r\n\r\nhello"));
  await assert.rejects(notJson.client.health(), (e) => e instanceof ExecrootError && e.code === "bad-answer" && e.status === 200);
  const notHttp = await fake((head, sock) => sock.write("SSH-2.0-OpenSSH\r\n\r\n"));
  await assert.rejects(notHttp.client.health(), (e) => e instanceof ExecrootError && e.code === "bad-answer");
  const silent = await fake(() => {});
  await assert.rejects(
    silent.client.health(),
    (e) => e instanceof ExecrootError && e.code === "unreachable" && /did not answer GET \/v1\/health within 300 ms/.test(e.message),
  );
  const none = new ExecrootClient({ socketPath: path.join(dir, "nothing.sock") });
  await assert.rejects(none.health(), (e) => e instanceof ExecrootError && e.code === "unreachable" && e.status === 0);
  for (const c of [notJson.client, notHttp.client, silent.client]) c.close();
});

test("concurrent requests each get a connection of their own", async () => {
  let open = 0;
  let most = 0;
  const { client, server } = await fake((head, sock) => setTimeout(() => sock.write(json(200, { ok: true, version: "c", overlay: {} })), 20));
  server.on("connection", (s) => {
    most = Math.max(most, ++open);
    s.on("close", () => open--);
  });
  const all = await Promise.all(Array.from({ length: 5 }, () => client.health()));
  assert.equal(all.length, 5);
  assert.equal(most, 5);
  client.close();
});
