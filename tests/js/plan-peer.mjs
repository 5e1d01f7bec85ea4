// An official automerge-repo client that opens a Tandem plan by URL, edits it, and (optionally)
// waits for a Tandem device's concurrent edit.
//
//   node plan-peer.mjs ws://HOST:PORT/PATH automerge:DOCID TERM [GOAL_TITLE]
//
// Finds the plan, keeps what it saw, then in one change sets `term` to TERM and adds a field
// Tandem does not know (`jsNote`), and waits until a storing peer (the relay, or a JS sync server
// with storage) reports the new heads. Prints {"seen": <doc as found>, "edited": <doc after the
// edit>, "heads": [...]}. With GOAL_TITLE it then keeps listening until the plan holds a goal with
// that title (the device's edit, made while offline) and prints a second line,
// {"final": <doc>, "heads": [...]}. Exits non-zero on timeout.
import * as Automerge from "@automerge/automerge";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { toJSON, waitFor, whenStored, withTimeout } from "./wait.mjs";

const [url, docUrl, term, goalTitle] = process.argv.slice(2);
const repo = new Repo({ network: [new WebSocketClientAdapter(url)], peerId: `js-plan-peer-${process.pid}` });

await withTimeout(
  (async () => {
    const handle = await repo.find(docUrl);
    const seen = toJSON(handle.doc());
    const stored = whenStored(handle);
    handle.change((d) => {
      d.term = term;
      d.jsNote = "added by automerge-repo";
    });
    await stored;
    console.log(JSON.stringify({ seen, edited: toJSON(handle.doc()), heads: Automerge.getHeads(handle.doc()) }));
    if (goalTitle !== undefined) {
      // Tandem writes scalar strings, which Automerge 3 hands to JS as ImmutableString objects.
      const hasGoal = (d) => Object.values(d.goals ?? {}).some((g) => String(g.title) === goalTitle);
      await waitFor(handle, hasGoal);
      console.log(JSON.stringify({ final: toJSON(handle.doc()), heads: Automerge.getHeads(handle.doc()) }));
    }
  })(),
  20000,
  "the plan was not found, stored, or edited by the device",
);
repo.shutdown();
process.exit(0);
