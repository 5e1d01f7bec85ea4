// An official automerge-repo client creates a document of Tandem's plan shape and waits for a
// Tandem device to edit it.
//
//   node new-plan.mjs ws://HOST:PORT/PATH PROGRESS scalar|text
//
// Strings are written as a JS app writes them: plain JS strings, which @automerge/automerge 3
// stores as collaborative Text objects. With `scalar`, the strings inside lists (coaches,
// strengths) are ImmutableString instead, i.e. Automerge scalar strings, the `[str]` of Tandem's
// layout; with `text` they are plain JS strings (Text objects) too.
//
// Creates the plan (one goal, "Pass calculus", with id "js-goal-1"), waits until the relay has
// stored it and prints {"url": ..., "created": <doc>}. Then keeps listening until the goal's
// `progress` is PROGRESS (the device's edit) and prints {"final": <doc>, "heads": [...]}.
// Exits non-zero on timeout.
import * as Automerge from "@automerge/automerge";
import { Repo } from "@automerge/automerge-repo";
import { WebSocketClientAdapter } from "@automerge/automerge-repo-network-websocket";
import { toJSON, waitFor, whenStored, withTimeout } from "./wait.mjs";

const [url, progress, lists] = process.argv.slice(2);
const item = lists === "scalar" ? (s) => new Automerge.ImmutableString(s) : (s) => s;
const repo = new Repo({ network: [new WebSocketClientAdapter(url)], peerId: `js-new-plan-${process.pid}` });

await withTimeout(
  (async () => {
    const handle = repo.create();
    const stored = whenStored(handle);
    // Written as a JS app would: plain numbers (Automerge `int`), a JS Date for the timestamp.
    handle.change((d) => {
      d.type = "plan";
      d.schemaVersion = 1;
      d.mentee = "maya";
      d.coaches = [item("carl")];
      d.program = "First-year success";
      d.term = "Fall 2026";
      d.strengths = [item("curious")];
      d.challenges = [];
      d.learningStyle = "visual";
      d.goals = {
        "js-goal-1": {
          id: "js-goal-1",
          title: "Pass calculus",
          description: "At least a B",
          category: "academic",
          targetDate: "2026-12-15",
          status: "not_started",
          progress: 0,
          createdAt: new Date(Date.UTC(2026, 8, 1, 10, 0, 0)),
          milestones: {},
        },
      };
      d.resources = [];
      d.metrics = {};
      d.checkIns = {};
    });
    await stored;
    console.log(JSON.stringify({ url: handle.url, created: toJSON(handle.doc()) }));
    await waitFor(handle, (d) => d.goals["js-goal-1"].progress === Number(progress));
    console.log(JSON.stringify({ final: toJSON(handle.doc()), heads: Automerge.getHeads(handle.doc()) }));
  })(),
  20000,
  "the plan was not stored or the device's edit did not arrive",
);
repo.shutdown();
process.exit(0);
