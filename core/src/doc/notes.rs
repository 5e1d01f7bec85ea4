//! Private-notes documents, and the collaborative-text edits they share with session notes.
//!
//! Text positions count Unicode scalar values (Rust `char`s), which is how this build of Automerge
//! indexes text. Swift and Kotlin callers convert from their own string indices.

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT, ReadDoc};

use super::codec::{ObjReader, child};
use super::{Document, EditContext};
use crate::error::{Error, Result};
use crate::ids::{DocumentId, NotesId, PlanId, UserId};
use crate::model::{DocKind, NewNotes, PrivateNotes};

impl Document {
    /// Creates a coach's private notes on a mentee, with `notes.text` as the first text.
    pub fn create_notes(id: NotesId, ctx: &EditContext, notes: NewNotes) -> Result<Document> {
        let description = format!("created private notes on {}", notes.mentee);
        Self::create(id.document_id(), DocKind::Notes, ctx, description, |tx| {
            tx.put(ROOT, "coach", notes.coach.as_str())?;
            tx.put(ROOT, "mentee", notes.mentee.as_str())?;
            tx.put(ROOT, "plan", notes.plan.document_id().url())?;
            let text = tx.put_object(ROOT, "text", ObjType::Text)?;
            tx.splice_text(&text, 0, 0, &notes.text)?;
            Ok(())
        })
    }

    pub fn read_notes(&self) -> Result<PrivateNotes> {
        self.expect_kind(DocKind::Notes)?;
        let root = ObjReader::root(&self.doc);
        Ok(PrivateNotes {
            id: NotesId(self.id),
            schema_version: root.u64("schemaVersion")?,
            coach: UserId::new(root.str("coach")?),
            mentee: UserId::new(root.str("mentee")?),
            plan: PlanId(read_document_ref(&root, "plan")?),
            text: root.text_or_empty("text")?,
        })
    }

    /// Deletes `delete` characters at `position` of the private notes and inserts `insert` there.
    pub fn splice_private_notes(
        &mut self,
        ctx: &EditContext,
        position: usize,
        delete: usize,
        insert: &str,
    ) -> Result<()> {
        self.expect_kind(DocKind::Notes)?;
        self.splice_text_field(ctx, "text", "private notes", position, delete, insert)
    }

    /// Makes the private notes read `text`, writing only the difference so that concurrent
    /// edits elsewhere in the text survive.
    pub fn replace_private_notes(&mut self, ctx: &EditContext, text: &str) -> Result<()> {
        self.expect_kind(DocKind::Notes)?;
        self.replace_text_field(ctx, "text", "private notes", text)
    }

    pub(super) fn splice_text_field(
        &mut self,
        ctx: &EditContext,
        key: &str,
        what: &str,
        position: usize,
        delete: usize,
        insert: &str,
    ) -> Result<()> {
        let text = child(&self.doc, &ROOT, key, ObjType::Text);
        let length = text.as_ref().map_or(0, |text| self.doc.length(text));
        let end = position.checked_add(delete);
        if end.is_none_or(|end| end > length) {
            return Err(Error::invalid(format!(
                "cannot delete {delete} characters at {position} of the {what}: it has {length}"
            )));
        }
        if delete == 0 && insert.is_empty() {
            return Ok(());
        }
        let delete_count = isize::try_from(delete)
            .map_err(|_| Error::invalid(format!("cannot delete {delete} characters")))?;
        let description = match (delete, insert.chars().count()) {
            (0, inserted) => format!("inserted {inserted} characters into the {what}"),
            (deleted, 0) => format!("deleted {deleted} characters from the {what}"),
            (deleted, inserted) => {
                format!("replaced {deleted} characters of the {what} with {inserted}")
            }
        };
        self.edit(ctx, description, |tx| {
            let text = match text {
                Some(text) => text,
                None => tx.put_object(ROOT, key, ObjType::Text)?,
            };
            Ok(tx.splice_text(&text, position, delete_count, insert)?)
        })
    }

    pub(super) fn replace_text_field(
        &mut self,
        ctx: &EditContext,
        key: &str,
        what: &str,
        new_text: &str,
    ) -> Result<()> {
        let text = child(&self.doc, &ROOT, key, ObjType::Text);
        if let Some(obj) = &text
            && self.doc.text(obj)? == new_text
        {
            return Ok(());
        }
        self.edit(ctx, format!("edited the {what}"), |tx| {
            let text = match text {
                Some(text) => text,
                None => tx.put_object(ROOT, key, ObjType::Text)?,
            };
            Ok(tx.update_text(&text, new_text)?)
        })
    }
}

/// A reference to another document, written as an `automerge:` URL (a bare id is accepted).
pub(super) fn read_document_ref<R: ReadDoc>(
    obj: &ObjReader<'_, R>,
    key: &str,
) -> Result<DocumentId> {
    let text = obj.str(key)?;
    DocumentId::parse(&text).map_err(|_| {
        Error::malformed(format!(
            "field {} should be a document URL, found {text:?}",
            obj.path_of(key)
        ))
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::doc::testing::{coach, ctx, plan_id};

    fn notes_doc() -> Document {
        let notes = NewNotes {
            coach: UserId::new("carl"),
            mentee: UserId::new("maya"),
            plan: plan_id(),
            text: "Seems tired.".into(),
        };
        Document::create_notes(NotesId(DocumentId::random()), &coach(), notes).unwrap()
    }

    #[test]
    fn private_notes_are_created_spliced_and_replaced() {
        let mut doc = notes_doc();
        let read = doc.read_notes().unwrap();
        assert_eq!(
            (read.coach.as_str(), read.mentee.as_str()),
            ("carl", "maya")
        );
        assert_eq!(read.text, "Seems tired.");
        doc.splice_private_notes(&coach(), 6, 5, "rested").unwrap();
        assert_eq!(doc.read_notes().unwrap().text, "Seems rested.");
        doc.replace_private_notes(&ctx("carl", 2, 3), "Seems rested. Ask about sleep.")
            .unwrap();
        assert_eq!(
            doc.read_notes().unwrap().text,
            "Seems rested. Ask about sleep."
        );
    }

    #[test]
    fn splices_count_characters_not_bytes() {
        let mut doc = notes_doc();
        doc.replace_private_notes(&coach(), "Café ok").unwrap();
        doc.splice_private_notes(&coach(), 4, 1, "!").unwrap();
        assert_eq!(doc.read_notes().unwrap().text, "Café!ok");
    }

    #[test]
    fn a_splice_past_the_end_is_refused_without_change() {
        let mut doc = notes_doc();
        let heads = doc.heads();
        let error = doc.splice_private_notes(&coach(), 12, 1, "").unwrap_err();
        assert!(matches!(error, Error::Invalid(_)), "{error}");
        assert!(
            doc.splice_private_notes(&coach(), usize::MAX, 1, "")
                .is_err()
        );
        assert_eq!(doc.heads(), heads);
    }
}
