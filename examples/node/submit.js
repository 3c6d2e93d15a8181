#!/usr/bin/env node
// Submits one request to Aragog's router over gRPC and prints its progress events, one JSON
// line each, as they arrive. The service definition comes from the router's server
// reflection (grpc.reflection.v1alpha): no .proto file is needed.
//
//   node submit.js [--router 127.0.0.1:50051] [--workflow chain3] [--policy largest]
//                  [--ca ca.pem] "<input>"
//
// --ca: the router speaks TLS, its certificate signed by this PEM root certificate.
//
// Exit status: 0 if the request SUCCEEDED; 1 if it ended otherwise (FAILED, CANCELLED: its
// error on stderr); 2 on a gRPC error (status code name and details on stderr).
'use strict';

const fs = require('fs');
const grpc = require('@grpc/grpc-js');
const { GrpcReflection, ReflectionRequestException } = require('grpc-js-reflection-client');

const USAGE =
  'usage: node submit.js [--router HOST:PORT] [--workflow ID] [--policy NAME] [--ca PEM] ' +
  '"<input text>"';

function parseArgs(argv) {
  const opts = { router: '127.0.0.1:50051', workflow: 'chain3', policy: '', ca: '', input: null };
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i];
    const flag = arg.match(/^--(router|workflow|policy|ca)(?:=(.*))?$/);
    if (flag) {
      const value = flag[2] !== undefined ? flag[2] : argv[++i];
      if (value === undefined) throw new Error(`${arg} needs a value`);
      opts[flag[1]] = value;
    } else if (arg === '-h' || arg === '--help') {
      console.log(USAGE);
      process.exit(0);
    } else if (arg.startsWith('--') || opts.input !== null) {
      throw new Error(`unexpected argument ${JSON.stringify(arg)}`);
    } else {
      opts.input = arg;
    }
  }
  if (opts.input === null) throw new Error('the input text is required');
  return opts;
}

// Reports a failed call on stderr ("gRPC error NOT_FOUND: ...") and returns exit status 2.
function grpcError(code, details) {
  console.error(`gRPC error ${grpc.status[code] || code}: ${details}`);
  return 2;
}

async function main() {
  let opts;
  try {
    opts = parseArgs(process.argv.slice(2));
  } catch (e) {
    console.error(`${e.message}\n${USAGE}`);
    return 2;
  }
  let creds;
  try {
    creds = opts.ca
      ? grpc.credentials.createSsl(fs.readFileSync(opts.ca))
      : grpc.credentials.createInsecure();
  } catch (e) {
    console.error(`cannot read --ca ${opts.ca}: ${e.message}`);
    return 2;
  }

  // Ask the router for the file declaring the service (and its imports, e.g. common.proto),
  // then turn it into a @grpc/grpc-js client constructor.
  let RouterService;
  try {
    const reflection = new GrpcReflection(opts.router, creds, {}, 'v1alpha');
    const descriptor = await reflection.getDescriptorBySymbol('aragog.v1.RouterService');
    const pkg = descriptor.getPackageObject({
      keepCase: true, // field names as in the .proto: request_id, workflow_id, ...
      longs: String, // uint64 as decimal strings
      enums: String, // enum values by name: REQUEST_STATE_SUCCEEDED, ...
      defaults: true,
      oneofs: true, // `event` names which event field is set
    });
    RouterService = pkg.aragog.v1.RouterService;
  } catch (err) {
    if (!(err instanceof ReflectionRequestException)) throw err;
    // The reflection client keeps only the message of the gRPC error ("Error: 14 UNAVAILABLE:
    // ..."), or the server's reflection error (e.g. an unknown symbol).
    const m = err.message.match(/^(?:Error: )?(\d+) [A-Z_]+: ([\s\S]*)$/);
    return m ? grpcError(Number(m[1]), m[2]) : grpcError('REFLECTION', err.message);
  }
  const router = new RouterService(opts.router, creds);

  return new Promise((resolve) => {
    let completed = null;
    let settled = false;
    const finish = (code) => {
      if (settled) return;
      settled = true;
      router.close();
      resolve(code);
    };
    const call = router.SubmitRequest({
      workflow_id: opts.workflow,
      input: opts.input,
      policy: opts.policy,
    });
    call.on('data', (msg) => {
      // One line per event: {"request_id": ..., "event": "<kind>", "<kind>": {...}}
      const kind = msg.event;
      console.log(JSON.stringify({ request_id: msg.request_id, event: kind, [kind]: msg[kind] }));
      if (kind === 'completed') completed = msg.completed;
    });
    // A non-OK status: 'error' comes before 'end', so the error decides.
    call.on('error', (err) => finish(grpcError(err.code, err.details)));
    call.on('end', () => {
      if (settled) return;
      if (completed === null) {
        console.error('the stream ended without a completed event');
        finish(1);
      } else if (completed.state !== 'REQUEST_STATE_SUCCEEDED') {
        console.error(`request ${completed.request_id} ${completed.state}: ${completed.error}`);
        finish(1);
      } else {
        finish(0);
      }
    });
  });
}

main().then(
  (code) => process.exit(code),
  (err) => {
    console.error(err && err.stack ? err.stack : String(err));
    process.exit(2);
  },
);
