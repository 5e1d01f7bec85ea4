// Writes a document through a relay and returns once the relay has acknowledged it.
//
//   node write.mjs ws://127.0.0.1:PORT JSON
//
// Client A creates a document holding JSON and waits until the relay reports A's heads (it
// answers only with what it has committed); then a second client B finds the document through the
// relay with that content. Prints {"url": ...}. Exits non-zero on timeout.
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { whenStored, withTimeout } from "./wait.mjs";

const [url, json] = process.argv.slice(2);
const a = new Repo({ network: [new WebSocketClientAdapter(url)] });
const b = new Repo({ network: [new WebSocketClientAdapter(url)] });

const handle = a.create(JSON.parse(json));
await withTimeout(whenStored(handle), 20000, "the relay did not acknowledge the document");
const seen = await withTimeout(b.find(handle.url), 20000, "the relay did not pass the document on");
console.log(JSON.stringify({ url: handle.url, seenByB: seen.doc() }));
a.shutdown();
b.shutdown();
process.exit(0);
