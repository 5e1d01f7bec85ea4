// A fresh automerge-repo client reads a document from a relay.
//
//   node read.mjs ws://127.0.0.1:PORT automerge:DOCID
//
// Prints {"doc": ...} or {"unavailable": "..."}. Exits non-zero on timeout.
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { withTimeout } from "./wait.mjs";

const [url, docUrl] = process.argv.slice(2);
const repo = new Repo({ network: [new WebSocketClientAdapter(url)] });
const result = await withTimeout(
  repo.find(docUrl).then(
    (handle) => ({ doc: handle.doc() }),
    (error) => ({ unavailable: String(error.message ?? error) }),
  ),
  20000,
  "no answer about the document",
);
console.log(JSON.stringify(result));
repo.shutdown();
process.exit(0);
