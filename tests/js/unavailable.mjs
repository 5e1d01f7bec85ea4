// An official automerge-repo client asks a relay for a document nobody has.
//
//   node unavailable.mjs ws://127.0.0.1:PORT
//
// Prints one JSON line: {"url": ..., "outcome": "unavailable" | "found", "error": ...}. In
// automerge-repo 2.x, `repo.find` rejects with "Document … is unavailable" once every peer has
// answered `doc-unavailable`. Exits non-zero on timeout.
import { Repo, generateAutomergeUrl } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { withTimeout } from "./wait.mjs";

const repo = new Repo({ network: [new WebSocketClientAdapter(process.argv[2])] });
const url = generateAutomergeUrl();

const result = await withTimeout(
  repo.find(url).then(
    (handle) => ({ url, outcome: "found", doc: handle.doc() }),
    (error) => ({ url, outcome: "unavailable", error: String(error.message ?? error) }),
  ),
  20000,
  "no answer about an unknown document",
);
console.log(JSON.stringify(result));
repo.shutdown();
process.exit(0);
