#!/usr/bin/env node
// Tianwang subscriber in Node.js: print envelopes as JSON lines, resume from a seq.
//
//   npm ci                                   # @grpc/grpc-js, @grpc/proto-loader, @msgpack/msgpack
//   TIANWANG_TOKEN=... node subscriber.js 'gnss/+/fix' 'signal/#' --count 10
//   TIANWANG_TOKEN=... node subscriber.js 'gnss/+/fix' --from-seq 1234 --journal-id 5f0c...
//
// It loads proto/tianwang/v1/gateway.proto from this repository (or the file named by
// TIANWANG_PROTO) at run time: no generated code. One JSON object per line on stdout, the same as
// examples/subscriber.py: an envelope (seq, topic, device_id, device_time_ns, gateway_time_ns,
// payload; bytes in payloads as hex) or {"gap": {from_seq, to_seq, reason}}. When it stops (after
// --count envelopes, or Ctrl-C) it prints on stderr where to resume: {"journal_id", "next_seq"}.
'use strict';

const fs = require('node:fs');
const path = require('node:path');
const { parseArgs } = require('node:util');
const grpc = require('@grpc/grpc-js');
const protoLoader = require('@grpc/proto-loader');
const { decode } = require('@msgpack/msgpack');

const USAGE = 'usage: node subscriber.js [PATTERN...] [--addr HOST:PORT] [--ca FILE] [--count N] ' +
  '[--from-seq N] [--journal-id ID]';

function fail(message, code = 2) {
  process.stderr.write(`subscriber: ${message}\n`);
  process.exit(code);
}

function count(name, text) {
  if (!/^\d+$/.test(text)) fail(`--${name} must be a whole number, 0 or more, not ${JSON.stringify(text)}`);
  return Number(text);
}

// int64/uint64 values (nanosecond times) do not fit a JS number: they travel as BigInt and are
// written into the JSON text as plain integers
function toJSON(value) {
  const marks = [];
  const text = JSON.stringify(value, (key, v) => {
    if (typeof v === 'bigint') {
      marks.push(v.toString());
      return `\u0000big${marks.length - 1}\u0000`;
    }
    if (v instanceof Uint8Array) return Buffer.from(v).toString('hex');
    return v;
  });
  return text.replace(/"\\u0000big(\d+)\\u0000"/g, (m, i) => marks[Number(i)]);
}

function main() {
  let parsed;
  try {
    parsed = parseArgs({
      allowPositionals: true,
      options: {
        addr: { type: 'string', default: process.env.TIANWANG_ADDR || '127.0.0.1:50051' },
        ca: { type: 'string' },
        count: { type: 'string', default: '0' },
        'from-seq': { type: 'string', default: '0' },
        'journal-id': { type: 'string', default: '' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    fail(`${err.message.split('\n')[0]} (--help shows the usage)`);
  }
  const opts = parsed.values;
  if (opts.help) {
    process.stdout.write(USAGE + '\n');
    return;
  }
  const wanted = count('count', opts.count);
  const fromSeq = count('from-seq', opts['from-seq']);

  const protoFile = process.env.TIANWANG_PROTO ||
    path.resolve(__dirname, '..', '..', 'proto', 'tianwang', 'v1', 'gateway.proto');
  if (!fs.existsSync(protoFile)) fail(`no ${protoFile}: set TIANWANG_PROTO to the path of gateway.proto`);
  const definition = protoLoader.loadSync(protoFile, {
    keepCase: true, // field names as in the .proto: from_seq, device_id
    longs: String, // uint64/int64 as decimal strings, converted below without loss
    defaults: true,
    oneofs: true,
  });
  const { Gateway } = grpc.loadPackageDefinition(definition).tianwang.v1;

  const token = process.env.TIANWANG_TOKEN;
  if (!token) fail('set TIANWANG_TOKEN to the bearer token');
  const credentials = opts.ca
    ? grpc.credentials.createSsl(fs.readFileSync(opts.ca))
    : grpc.credentials.createInsecure();
  // batches are capped at 3 MiB by the gateway; leave room above gRPC's 4 MiB default
  const gateway = new Gateway(opts.addr, credentials, { 'grpc.max_receive_message_length': 8 * 1024 * 1024 });
  const metadata = new grpc.Metadata();
  metadata.set('authorization', `Bearer ${token}`);

  const position = { journal_id: opts['journal-id'], next_seq: fromSeq };
  let seen = 0;
  let done = false;
  const call = gateway.Subscribe(
    { topics: parsed.positionals, from_seq: String(fromSeq), journal_id: position.journal_id },
    metadata,
  );
  const finish = (code) => {
    if (done) return;
    done = true;
    process.stderr.write(JSON.stringify(position) + '\n');
    call.cancel();
    gateway.close();
    process.exitCode = code;
  };

  // the stream announces its journal first: keep it with the seq, a resume needs both
  call.on('metadata', (md) => {
    const id = md.get('tianwang-journal-id')[0];
    if (id) position.journal_id = String(id);
  });
  call.on('data', (batch) => {
    if (done) return;
    if (batch.gap) { // asked-for envelopes the gateway no longer holds
      const gap = { from_seq: Number(batch.gap.from_seq), to_seq: Number(batch.gap.to_seq), reason: batch.gap.reason };
      process.stdout.write(JSON.stringify({ gap }) + '\n');
      position.next_seq = gap.to_seq + 1;
    }
    for (const env of batch.envelopes) {
      const payload = env.payload.length ? decode(env.payload, { useBigInt64: true }) : {};
      process.stdout.write(toJSON({
        seq: Number(env.seq), // seqs stay far below 2^53
        topic: env.topic,
        device_id: env.device_id,
        device_time_ns: BigInt(env.device_time_ns),
        gateway_time_ns: BigInt(env.gateway_time_ns),
        payload,
      }) + '\n');
      position.next_seq = Number(env.seq) + 1;
      seen += 1;
      if (seen === wanted) return finish(0);
    }
  });
  call.on('error', (err) => {
    if (done) return; // our own cancel
    process.stderr.write(`subscriber: ${grpc.status[err.code]}: ${err.details}\n`);
    finish(2);
  });
  call.on('end', () => finish(0));
  process.on('SIGINT', () => finish(0));
  process.on('SIGTERM', () => finish(0));
}

main();
