// Baseline (d) of benchmarks/push.py: the npm web-push library as its users call it.
//
// Reads a JSON job on stdin: {"vapid": {"subject", "public_key", "private_key"}, "ttl",
// "concurrency", "messages": [{"endpoint", "p256dh", "auth", "payload"}]}; sends every message
// with webpush.sendNotification(), at most `concurrency` at a time, and prints one JSON line:
// {"sent", "failed", "seconds", "per_second"}. A self-signed receiver is trusted through
// NODE_EXTRA_CA_CERTS, which the benchmark sets; web-push itself is left at its defaults (a new
// VAPID signature per call, Node's global keep-alive agent).

import webpush from "web-push";

async function readStdin() {
  const chunks = [];
  for await (const chunk of process.stdin) chunks.push(chunk);
  return JSON.parse(Buffer.concat(chunks).toString("utf8"));
}

const job = await readStdin();
const options = {
  TTL: job.ttl,
  topic: "lunch",
  vapidDetails: {
    subject: job.vapid.subject,
    publicKey: job.vapid.public_key,
    privateKey: job.vapid.private_key,
  },
};

let next = 0;
let sent = 0;
let failed = 0;
let firstError = null;

async function worker() {
  while (next < job.messages.length) {
    const m = job.messages[next++];
    try {
      const res = await webpush.sendNotification(
        { endpoint: m.endpoint, keys: { p256dh: m.p256dh, auth: m.auth } },
        m.payload,
        options,
      );
      if (res.statusCode === 201) sent++;
      else failed++;
    } catch (err) {
      failed++;
      firstError ??= String(err && (err.body || err.message || err));
    }
  }
}

const started = process.hrtime.bigint();
await Promise.all(Array.from({ length: job.concurrency }, worker));
const seconds = Number(process.hrtime.bigint() - started) / 1e9;
process.stdout.write(
  JSON.stringify({ sent, failed, seconds, per_second: sent / seconds, first_error: firstError }) +
    "\n",
);
