//! Who changed what, and when: Tandem's commit-message format and a document's history.
//!
//! A commit message is one description line, a blank line, then `Key: value` trailers:
//!
//! ```text
//! completed milestone "Draft essay"
//!
//! Tandem-User: alice
//! Tandem-Device: 00112233445566778899aabbccddeeff
//! Tandem-At: 2025-03-01T10:00:00.000Z
//! ```
//!
//! Trailer values escape `\` as `\\` and line breaks as `\n`; line breaks in the description become
//! spaces. Changes written by other clients (a JS app, automerge-repo) have no trailers: their
//! author is unknown and their time is the change's own timestamp.

use std::collections::HashSet;

use automerge::{ChangeHash, ChangeMetadata};
use chrono::{DateTime, SecondsFormat, Utc};

use super::{Document, EditContext, codec};
use crate::ids::{DeviceId, UserId};
use crate::model::HistoryEntry;

const USER: &str = "Tandem-User";
const DEVICE: &str = "Tandem-Device";
const AT: &str = "Tandem-At";

/// The commit message recording `ctx`'s author and time with a one-line description.
pub(crate) fn commit_message(ctx: &EditContext, description: &str) -> String {
    let description: String = description
        .chars()
        .map(|c| if c == '\n' || c == '\r' { ' ' } else { c })
        .collect();
    format!(
        "{description}\n\n{USER}: {}\n{DEVICE}: {}\n{AT}: {}",
        escape(ctx.author.user.as_str()),
        ctx.author.device,
        ctx.at.to_rfc3339_opts(SecondsFormat::Millis, true)
    )
}

/// What a commit message says about its change. Every part is optional: foreign writers may
/// write any message or none.
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct CommitInfo {
    pub description: String,
    pub user: Option<UserId>,
    pub device: Option<DeviceId>,
    pub at: Option<DateTime<Utc>>,
}

/// Parses a commit message written by [`commit_message`]; other messages become a description.
pub fn parse_commit_message(message: &str) -> CommitInfo {
    let mut lines = message.lines();
    let mut info = CommitInfo {
        description: lines.next().unwrap_or_default().to_owned(),
        ..CommitInfo::default()
    };
    for line in lines {
        let Some((key, value)) = line.split_once(": ") else {
            continue;
        };
        let value = unescape(value);
        match key {
            USER => info.user = Some(UserId::new(value)),
            DEVICE => info.device = DeviceId::parse_hex(&value).ok(),
            AT => {
                info.at = DateTime::parse_from_rfc3339(&value)
                    .ok()
                    .map(|at| at.with_timezone(&Utc));
            }
            _ => {}
        }
    }
    info
}

/// The commit information of one change, its time falling back to the change's timestamp.
pub(crate) fn change_info(change: &ChangeMetadata<'_>) -> CommitInfo {
    let mut info = change
        .message
        .as_deref()
        .map(parse_commit_message)
        .unwrap_or_default();
    if info.at.is_none() && change.timestamp != 0 {
        // Automerge's timestamp is in seconds; some JS versions wrote milliseconds, which would
        // land thousands of years ahead, so those are read as milliseconds.
        let seconds_limit = 100_000_000_000;
        info.at = if change.timestamp.abs() < seconds_limit {
            DateTime::from_timestamp(change.timestamp, 0)
        } else {
            codec::millis_to_datetime(change.timestamp)
        };
    }
    info
}

fn escape(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('\n', "\\n")
        .replace('\r', "\\r")
}

fn unescape(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    let mut chars = value.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('n') => out.push('\n'),
            Some('r') => out.push('\r'),
            Some(other) => out.push(other),
            None => out.push('\\'),
        }
    }
    out
}

impl Document {
    /// Every change in the document, causes before effects (Automerge's topological order).
    /// A change without a time says the Unix epoch.
    pub fn history(&self) -> Vec<HistoryEntry> {
        self.history_between(&[], &self.doc.get_heads())
    }

    /// The changes that took the document from `before` to `after` (both sets of heads it has
    /// been at), in the order of [`history`](Self::history): all of them for an empty `before`.
    pub fn history_between(
        &self,
        before: &[ChangeHash],
        after: &[ChangeHash],
    ) -> Vec<HistoryEntry> {
        // Changes made since `after` are not part of it; usually there are none.
        let later: HashSet<ChangeHash> = self
            .doc
            .get_changes_meta(after)
            .iter()
            .map(|change| change.hash)
            .collect();
        self.doc
            .get_changes_meta(before)
            .iter()
            .filter(|change| !later.contains(&change.hash))
            .map(|change| {
                let info = change_info(change);
                HistoryEntry {
                    hash: change.hash.to_string(),
                    author: info.user,
                    device: info.device,
                    at: info.at.unwrap_or(DateTime::UNIX_EPOCH),
                    description: info.description,
                }
            })
            .collect()
    }

    /// The commit information of the change with `hash`, if the document has it.
    pub fn change_info(&self, hash: &ChangeHash) -> Option<CommitInfo> {
        self.doc
            .get_change_meta_by_hash(hash)
            .map(|change| change_info(&change))
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::model::Author;

    fn ctx(user: &str) -> EditContext {
        EditContext::new(
            Author {
                user: UserId::new(user),
                device: DeviceId::from_bytes([7; 16]),
            },
            DateTime::from_timestamp_millis(1_740_823_200_123).unwrap(),
        )
    }

    #[test]
    fn commit_messages_round_trip_author_device_time_and_description() {
        let ctx = ctx("ali\\ce\nsecond line");
        let message = commit_message(&ctx, "added goal \"A\"\nwith a newline");
        let info = parse_commit_message(&message);
        assert_eq!(info.description, "added goal \"A\" with a newline");
        assert_eq!(info.user, Some(ctx.author.user.clone()));
        assert_eq!(info.device, Some(ctx.author.device));
        assert_eq!(info.at, Some(ctx.at));
    }

    #[test]
    fn foreign_messages_are_descriptions_without_authors() {
        let info = parse_commit_message("edited in the web app");
        assert_eq!(info.description, "edited in the web app");
        assert_eq!(info.user, None);
        assert_eq!(info.device, None);
        assert_eq!(info.at, None);
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod document_tests {
    use crate::doc::testing::{ctx, plan_doc};
    use crate::ids::{DeviceId, UserId};

    #[test]
    fn history_between_two_heads_lists_only_the_changes_between_them() {
        let mut doc = plan_doc();
        let created = doc.heads();
        doc.set_term(&ctx("carl", 2, 5), "Fall 2025").unwrap();
        let termed = doc.heads();
        doc.add_strength(&ctx("maya", 1, 9), "organised").unwrap();
        let authors = |entries: Vec<crate::model::HistoryEntry>| -> Vec<String> {
            entries
                .into_iter()
                .map(|entry| entry.author.unwrap().to_string())
                .collect()
        };
        assert_eq!(authors(doc.history_between(&created, &termed)), ["carl"]);
        assert_eq!(
            authors(doc.history_between(&created, &doc.heads())),
            ["carl", "maya"]
        );
        assert_eq!(doc.history_between(&[], &doc.heads()).len(), 3);
        assert!(doc.history_between(&termed, &termed).is_empty());
    }

    #[test]
    fn history_lists_every_change_with_author_device_time_and_description() {
        let mut doc = plan_doc();
        doc.set_term(&ctx("carl", 2, 5), "Fall 2025").unwrap();
        doc.add_strength(&ctx("maya", 1, 9), "organised").unwrap();

        let history = doc.history();
        let summary: Vec<_> = history
            .iter()
            .map(|h| {
                (
                    h.author.clone().unwrap(),
                    h.device.unwrap(),
                    h.at,
                    h.description.as_str(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (
                    UserId::new("maya"),
                    DeviceId::from_bytes([1; 16]),
                    ctx("", 0, 0).at,
                    "created the plan of maya"
                ),
                (
                    UserId::new("carl"),
                    DeviceId::from_bytes([2; 16]),
                    ctx("", 0, 5).at,
                    "set the term to \"Fall 2025\""
                ),
                (
                    UserId::new("maya"),
                    DeviceId::from_bytes([1; 16]),
                    ctx("", 0, 9).at,
                    "added strength \"organised\""
                ),
            ]
        );
        assert_eq!(history[2].hash, doc.heads()[0].to_string());
        assert!(history.iter().all(|h| h.hash.len() == 64));
    }
}
