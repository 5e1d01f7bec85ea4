// One official automerge-repo client (its token in the URL) tries a list of documents.
//
//   node access.mjs ws://127.0.0.1:PORT/?token=… find:automerge:A write:automerge:B …
//
// `find:` only looks the document up; `write:` also changes it and waits until the relay has
// stored the change. Prints one JSON line: {"automerge:A": {"doc": …} | {"unavailable": "…"}
// | {"written": heads}, …}. Exits non-zero on timeout (a write the relay never stores).
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { whenStored, withTimeout } from "./wait.mjs";

const [url, ...wanted] = process.argv.slice(2);
const repo = new Repo({ network: [new WebSocketClientAdapter(url)] });
const results = {};
for (const item of wanted) {
  const [mode, ...rest] = item.split(":");
  const docUrl = rest.join(":");
  const found = await withTimeout(
    repo.find(docUrl).then(
      (handle) => ({ handle }),
      (error) => ({ unavailable: String(error.message ?? error) }),
    ),
    20000,
    `no answer about ${docUrl}`,
  );
  if (found.unavailable !== undefined) {
    results[docUrl] = { unavailable: found.unavailable };
  } else if (mode === "write") {
    found.handle.change((doc) => {
      doc.writtenByJs = "yes";
    });
    const heads = await withTimeout(whenStored(found.handle), 20000, `storing ${docUrl}`);
    results[docUrl] = { written: heads };
  } else {
    results[docUrl] = { doc: found.handle.doc() };
  }
}
console.log(JSON.stringify(results));
repo.shutdown();
process.exit(0);
