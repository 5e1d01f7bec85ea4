//! Directory documents: the list of documents belonging to one pairing, so that a new device
//! can discover what to fetch.

use automerge::transaction::Transactable;
use automerge::{ObjType, ROOT};

use super::codec::{ObjReader, child};
use super::plan::non_blank;
use super::{Document, EditContext};
use crate::error::{Error, Result};
use crate::ids::{DirectoryId, DocumentId, UserId};
use crate::model::{Directory, DirectoryEntry, DocKind, NewDirectory};

impl Document {
    /// Creates an empty directory for a pairing.
    pub fn create_directory(
        id: DirectoryId,
        ctx: &EditContext,
        directory: NewDirectory,
    ) -> Result<Document> {
        let description = format!(
            "created the directory of {} and {}",
            directory.coach, directory.mentee
        );
        Self::create(
            id.document_id(),
            DocKind::Directory,
            ctx,
            description,
            |tx| {
                tx.put(ROOT, "program", directory.program.as_str())?;
                tx.put(ROOT, "coach", directory.coach.as_str())?;
                tx.put(ROOT, "mentee", directory.mentee.as_str())?;
                tx.put_object(ROOT, "entries", ObjType::Map)?;
                Ok(())
            },
        )
    }

    /// Reads the directory, entries by kind (plan, session, notes), then title, then id.
    pub fn read_directory(&self) -> Result<Directory> {
        self.expect_kind(DocKind::Directory)?;
        let root = ObjReader::root(&self.doc);
        let mut entries = match root.opt_object("entries", ObjType::Map)? {
            None => Vec::new(),
            Some(map) => map
                .map_entries()?
                .into_iter()
                .map(|(key, entry)| {
                    let document = DocumentId::parse(&key).map_err(|_| {
                        Error::malformed(format!(
                            "directory entry key {key:?} is not a document id"
                        ))
                    })?;
                    // An entry of a kind from a newer release stays in the document, unlisted.
                    let Some(kind) = DocKind::parse(&entry.str("kind")?) else {
                        return Ok(None);
                    };
                    Ok(Some(DirectoryEntry {
                        document,
                        kind,
                        title: entry.str_or_empty("title")?,
                    }))
                })
                .filter_map(Result::transpose)
                .collect::<Result<Vec<_>>>()?,
        };
        entries.sort_by(|a, b| {
            let rank = |kind| DocKind::ALL.iter().position(|k| *k == kind);
            (rank(a.kind), &a.title, a.document).cmp(&(rank(b.kind), &b.title, b.document))
        });
        Ok(Directory {
            id: DirectoryId(self.id),
            schema_version: root.u64("schemaVersion")?,
            program: root.str_or_empty("program")?,
            coach: UserId::new(root.str("coach")?),
            mentee: UserId::new(root.str("mentee")?),
            entries,
        })
    }

    /// Lists a document in the directory, or updates its kind and title if it is listed.
    pub fn add_directory_entry(&mut self, ctx: &EditContext, entry: DirectoryEntry) -> Result<()> {
        self.expect_kind(DocKind::Directory)?;
        let title = non_blank(&entry.title, "directory entry title")?;
        let entries = child(&self.doc, &ROOT, "entries", ObjType::Map);
        let key = entry.document.to_string();
        let existing = entries
            .as_ref()
            .and_then(|entries| child(&self.doc, entries, &key, ObjType::Map));
        let description = format!("listed {} {title:?}", entry.kind.as_str());
        self.edit(ctx, description, |tx| {
            let obj = match existing {
                Some(obj) => obj,
                None => {
                    let entries = match entries {
                        Some(entries) => entries,
                        None => tx.put_object(ROOT, "entries", ObjType::Map)?,
                    };
                    tx.put_object(&entries, key.as_str(), ObjType::Map)?
                }
            };
            tx.put(&obj, "kind", entry.kind.as_str())?;
            tx.put(&obj, "title", title)?;
            Ok(())
        })
    }

    /// Removes a document from the directory; [`Error::NotFound`] if it is not listed.
    pub fn remove_directory_entry(
        &mut self,
        ctx: &EditContext,
        document: DocumentId,
    ) -> Result<()> {
        self.expect_kind(DocKind::Directory)?;
        let key = document.to_string();
        let entries = child(&self.doc, &ROOT, "entries", ObjType::Map)
            .filter(|entries| child(&self.doc, entries, &key, ObjType::Map).is_some())
            .ok_or_else(|| {
                Error::not_found(format!(
                    "document {document} is not in directory {}",
                    self.id
                ))
            })?;
        self.edit(ctx, format!("unlisted document {document}"), |tx| {
            Ok(tx.delete(&entries, key.as_str())?)
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use crate::doc::testing::{coach, mentee};

    fn directory_doc() -> Document {
        let directory = NewDirectory {
            program: "First-year success".into(),
            coach: UserId::new("carl"),
            mentee: UserId::new("maya"),
        };
        Document::create_directory(DirectoryId(DocumentId::random()), &coach(), directory).unwrap()
    }

    fn entry(kind: DocKind, title: &str) -> DirectoryEntry {
        DirectoryEntry {
            document: DocumentId::random(),
            kind,
            title: title.into(),
        }
    }

    #[test]
    fn entries_are_listed_by_kind_then_title_and_can_be_removed() {
        let mut doc = directory_doc();
        let session_b = entry(DocKind::Session, "Session 2");
        let session_a = entry(DocKind::Session, "Session 1");
        let plan = entry(DocKind::Plan, "Maya's plan");
        for e in [&session_b, &session_a, &plan] {
            doc.add_directory_entry(&coach(), e.clone()).unwrap();
        }
        let listed = doc.read_directory().unwrap();
        assert_eq!(listed.program, "First-year success");
        assert_eq!(
            listed.entries,
            [plan.clone(), session_a.clone(), session_b.clone()]
        );

        doc.remove_directory_entry(&mentee(), session_a.document)
            .unwrap();
        assert_eq!(doc.read_directory().unwrap().entries, [plan, session_b]);
    }

    #[test]
    fn removing_an_unlisted_document_is_not_found_and_changes_nothing() {
        let mut doc = directory_doc();
        let heads = doc.heads();
        let error = doc
            .remove_directory_entry(&coach(), DocumentId::random())
            .unwrap_err();
        assert!(matches!(error, Error::NotFound(_)), "{error}");
        let error = doc
            .add_directory_entry(&coach(), entry(DocKind::Plan, ""))
            .unwrap_err();
        assert!(matches!(error, Error::Invalid(_)), "{error}");
        assert_eq!(doc.heads(), heads);
    }
}
