//! Reading and writing Tandem's values in Automerge: typed getters that name the offending field,
//! and the scalar encodings (dates, timestamps, numbers) shared by every document kind.
//!
//! Numbers are written as Automerge `int`, which JS reads as a plain `number`; `uint` would reach a
//! JS app as a `BigInt`, which `JSON.stringify` refuses and arithmetic with numbers rejects.
//! Readers are tolerant in the ways JS clients need: `@automerge/automerge` writes whole numbers as
//! `int` and fractional ones as `f64`, so every numeric getter accepts int, uint and (where a
//! fraction makes sense) f64. A value of a type that cannot mean the field is `Error::Malformed`
//! naming the field's path, never a panic.

use automerge::{ObjId, ObjType, ReadDoc, ScalarValue, Value};
use chrono::{DateTime, NaiveDate, Utc};

use crate::error::{Error, Result};

/// The `YYYY-MM-DD` form dates are written in.
pub(crate) const DATE_FORMAT: &str = "%Y-%m-%d";

pub(crate) fn date_to_string(date: NaiveDate) -> String {
    date.format(DATE_FORMAT).to_string()
}

/// An instant as an Automerge timestamp: milliseconds since the Unix epoch, as JS `Date` uses.
pub(crate) fn timestamp(at: DateTime<Utc>) -> ScalarValue {
    ScalarValue::Timestamp(at.timestamp_millis())
}

pub(crate) fn millis_to_datetime(millis: i64) -> Option<DateTime<Utc>> {
    DateTime::from_timestamp_millis(millis)
}

/// A scalar written as the text a person reads in a conflict list.
pub(crate) fn scalar_to_text(value: &ScalarValue) -> String {
    match value {
        ScalarValue::Str(s) => s.to_string(),
        ScalarValue::Int(n) => n.to_string(),
        ScalarValue::Uint(n) => n.to_string(),
        ScalarValue::F64(n) => n.to_string(),
        ScalarValue::Counter(c) => c.to_string(),
        ScalarValue::Timestamp(ms) => {
            millis_to_datetime(*ms).map_or_else(|| ms.to_string(), |at| at.to_rfc3339())
        }
        ScalarValue::Boolean(b) => b.to_string(),
        ScalarValue::Null => "null".to_owned(),
        ScalarValue::Bytes(bytes) => format!("{} bytes", bytes.len()),
        ScalarValue::Unknown { type_code, .. } => format!("unknown value (type {type_code})"),
    }
}

/// One object of a document being read, with its path from the root for error messages.
pub(crate) struct ObjReader<'a, R: ReadDoc> {
    doc: &'a R,
    id: ObjId,
    path: String,
}

impl<'a, R: ReadDoc> ObjReader<'a, R> {
    pub(crate) fn root(doc: &'a R) -> Self {
        Self {
            doc,
            id: ObjId::Root,
            path: String::new(),
        }
    }

    /// The path of `key` inside this object, e.g. `goals/abc/title`.
    pub(crate) fn path_of(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}/{key}", self.path)
        }
    }

    fn wrong_type(&self, key: &str, expected: &str, found: &Value<'_>) -> Error {
        Error::malformed(format!(
            "field {} should be {expected}, found {}",
            self.path_of(key),
            describe(found)
        ))
    }

    fn missing(&self, key: &str) -> Error {
        Error::malformed(format!("field {} is missing", self.path_of(key)))
    }

    fn get(&self, key: &str) -> Result<Option<(Value<'a>, ObjId)>> {
        self.doc
            .get(&self.id, key)
            .map_err(|e| Error::malformed(format!("cannot read field {}: {e}", self.path_of(key))))
    }

    fn scalar(&self, key: &str) -> Result<Option<ScalarValue>> {
        match self.get(key)? {
            None => Ok(None),
            Some((Value::Scalar(s), _)) => Ok(Some(s.into_owned())),
            Some((found, _)) => Err(self.wrong_type(key, "a scalar", &found)),
        }
    }

    /// A string field; absent is `None`. Text objects are accepted too, since a JS client may
    /// reasonably store any string as collaborative text.
    pub(crate) fn opt_str(&self, key: &str) -> Result<Option<String>> {
        match self.get(key)? {
            None => Ok(None),
            Some((Value::Scalar(s), _)) => match s.as_ref() {
                ScalarValue::Str(text) => Ok(Some(text.to_string())),
                ScalarValue::Null => Ok(None),
                _ => Err(self.wrong_type(key, "a string", &Value::Scalar(s))),
            },
            Some((Value::Object(ObjType::Text), id)) => self
                .doc
                .text(&id)
                .map(Some)
                .map_err(|e| Error::malformed(format!("field {}: {e}", self.path_of(key)))),
            Some((found, _)) => Err(self.wrong_type(key, "a string", &found)),
        }
    }

    pub(crate) fn str(&self, key: &str) -> Result<String> {
        self.opt_str(key)?.ok_or_else(|| self.missing(key))
    }

    /// A free-text field that older or foreign writers may have left out.
    pub(crate) fn str_or_empty(&self, key: &str) -> Result<String> {
        Ok(self.opt_str(key)?.unwrap_or_default())
    }

    pub(crate) fn opt_u64(&self, key: &str) -> Result<Option<u64>> {
        let Some(value) = self.scalar(key)? else {
            return Ok(None);
        };
        let number = match &value {
            ScalarValue::Uint(n) => Some(*n),
            ScalarValue::Int(n) => u64::try_from(*n).ok(),
            ScalarValue::F64(n) if n.fract() == 0.0 && *n >= 0.0 && *n <= u32::MAX as f64 => {
                Some(*n as u64)
            }
            ScalarValue::Null => return Ok(None),
            _ => None,
        };
        number
            .map(Some)
            .ok_or_else(|| self.wrong_type(key, "a whole number", &owned(&value)))
    }

    pub(crate) fn u64(&self, key: &str) -> Result<u64> {
        self.opt_u64(key)?.ok_or_else(|| self.missing(key))
    }

    /// A whole number that must fit a smaller type, e.g. progress in a `u8`.
    pub(crate) fn opt_small<T: TryFrom<u64>>(&self, key: &str) -> Result<Option<T>> {
        match self.opt_u64(key)? {
            None => Ok(None),
            Some(n) => T::try_from(n).map(Some).map_err(|_| {
                Error::malformed(format!("field {} is out of range: {n}", self.path_of(key)))
            }),
        }
    }

    pub(crate) fn opt_f64(&self, key: &str) -> Result<Option<f64>> {
        match self.scalar(key)? {
            None | Some(ScalarValue::Null) => Ok(None),
            Some(ScalarValue::F64(n)) => Ok(Some(n)),
            Some(ScalarValue::Int(n)) => Ok(Some(n as f64)),
            Some(ScalarValue::Uint(n)) => Ok(Some(n as f64)),
            Some(other) => Err(self.wrong_type(key, "a number", &owned(&other))),
        }
    }

    pub(crate) fn bool_or_false(&self, key: &str) -> Result<bool> {
        match self.scalar(key)? {
            None | Some(ScalarValue::Null) => Ok(false),
            Some(ScalarValue::Boolean(b)) => Ok(b),
            Some(other) => Err(self.wrong_type(key, "a boolean", &owned(&other))),
        }
    }

    /// An instant; Automerge timestamps, and plain integers of milliseconds as some writers use.
    pub(crate) fn timestamp(&self, key: &str) -> Result<DateTime<Utc>> {
        let value = self.scalar(key)?.ok_or_else(|| self.missing(key))?;
        let millis = match &value {
            ScalarValue::Timestamp(ms) | ScalarValue::Int(ms) => Some(*ms),
            ScalarValue::Uint(ms) => i64::try_from(*ms).ok(),
            _ => None,
        };
        millis
            .and_then(millis_to_datetime)
            .ok_or_else(|| self.wrong_type(key, "a timestamp", &owned(&value)))
    }

    /// A `YYYY-MM-DD` date; absent (or null) is `None`.
    pub(crate) fn opt_date(&self, key: &str) -> Result<Option<NaiveDate>> {
        match self.opt_str(key)? {
            None => Ok(None),
            Some(text) => NaiveDate::parse_from_str(&text, DATE_FORMAT)
                .map(Some)
                .map_err(|_| {
                    Error::malformed(format!(
                        "field {} should be a YYYY-MM-DD date, found {text:?}",
                        self.path_of(key)
                    ))
                }),
        }
    }

    /// A nested object of the given type; absent is `None`.
    pub(crate) fn opt_object(&self, key: &str, expected: ObjType) -> Result<Option<Self>> {
        match self.get(key)? {
            None => Ok(None),
            Some((Value::Object(found), id)) if same_shape(found, expected) => Ok(Some(Self {
                doc: self.doc,
                id,
                path: self.path_of(key),
            })),
            Some((found, _)) => Err(self.wrong_type(key, shape_name(expected), &found)),
        }
    }

    pub(crate) fn object(&self, key: &str, expected: ObjType) -> Result<Self> {
        self.opt_object(key, expected)?
            .ok_or_else(|| self.missing(key))
    }

    /// The entries of this map whose values are maps (goals, milestones, items), keyed by id.
    /// Entries of another type are reported, since every writer puts maps there.
    pub(crate) fn map_entries(&self) -> Result<Vec<(String, Self)>> {
        self.doc
            .keys(&self.id)
            .map(|key| {
                let entry = self.object(&key, ObjType::Map)?;
                Ok((key, entry))
            })
            .collect()
    }

    /// The items of this list, each as a reader addressed by its index.
    pub(crate) fn list_len(&self) -> usize {
        self.doc.length(&self.id)
    }

    pub(crate) fn list_object(&self, index: usize, expected: ObjType) -> Result<Self> {
        match self.doc.get(&self.id, index) {
            Ok(Some((Value::Object(found), id))) if same_shape(found, expected) => Ok(Self {
                doc: self.doc,
                id,
                path: self.path_of(&index.to_string()),
            }),
            Ok(Some((found, _))) => {
                Err(self.wrong_type(&index.to_string(), shape_name(expected), &found))
            }
            Ok(None) => Err(self.missing(&index.to_string())),
            Err(e) => Err(Error::malformed(format!("cannot read {}: {e}", self.path))),
        }
    }

    /// A list of strings (strengths, topics, coaches).
    pub(crate) fn string_list(&self, key: &str) -> Result<Vec<String>> {
        let Some(list) = self.opt_object(key, ObjType::List)? else {
            return Ok(Vec::new());
        };
        (0..list.list_len())
            .map(|index| match list.doc.get(&list.id, index) {
                Ok(Some((Value::Scalar(s), _))) => match s.as_ref() {
                    ScalarValue::Str(text) => Ok(text.to_string()),
                    _ => Err(list.wrong_type(&index.to_string(), "a string", &Value::Scalar(s))),
                },
                // `@automerge/automerge` 3 writes every JS string as text, list items included.
                Ok(Some((Value::Object(ObjType::Text), id))) => list
                    .doc
                    .text(&id)
                    .map_err(|e| Error::malformed(format!("field {}/{index}: {e}", list.path))),
                Ok(Some((found, _))) => {
                    Err(list.wrong_type(&index.to_string(), "a string", &found))
                }
                Ok(None) => Err(list.missing(&index.to_string())),
                Err(e) => Err(Error::malformed(format!("cannot read {}: {e}", list.path))),
            })
            .collect()
    }

    /// A collaborative text field; a plain string is accepted from foreign writers.
    pub(crate) fn text_or_empty(&self, key: &str) -> Result<String> {
        self.str_or_empty(key)
    }
}

fn owned(value: &ScalarValue) -> Value<'static> {
    Value::Scalar(std::borrow::Cow::Owned(value.clone()))
}

/// Text and list are both sequences, but a reader expecting one must not silently read the other,
/// except that a text field may legitimately be read where a string is expected (see `opt_str`).
fn same_shape(found: ObjType, expected: ObjType) -> bool {
    match (found, expected) {
        (ObjType::Map | ObjType::Table, ObjType::Map | ObjType::Table) => true,
        (a, b) => a == b,
    }
}

fn shape_name(kind: ObjType) -> &'static str {
    match kind {
        ObjType::Map | ObjType::Table => "a map",
        ObjType::List => "a list",
        ObjType::Text => "text",
    }
}

fn describe(value: &Value<'_>) -> String {
    match value {
        Value::Object(kind) => shape_name(*kind).to_owned(),
        Value::Scalar(s) => match s.as_ref() {
            ScalarValue::Str(text) => format!("the string {text:?}"),
            other => format!("{other:?}"),
        },
    }
}

/// Finds the index of `item` in a list of strings, for removals by value.
pub(crate) fn index_of_string<R: ReadDoc>(doc: &R, list: &ObjId, item: &str) -> Option<usize> {
    (0..doc.length(list)).find(|&index| match doc.get(list, index) {
        Ok(Some((Value::Scalar(s), _))) => matches!(s.as_ref(), ScalarValue::Str(t) if t == item),
        // A list item JS wrote as text (see `string_list`).
        Ok(Some((Value::Object(ObjType::Text), id))) => doc.text(&id).is_ok_and(|t| t == item),
        _ => false,
    })
}

/// The id of a nested object if it is there with the right type: the write side's lookup.
pub(crate) fn child<R: ReadDoc>(
    doc: &R,
    parent: &ObjId,
    key: &str,
    kind: ObjType,
) -> Option<ObjId> {
    match doc.get(parent, key) {
        Ok(Some((Value::Object(found), id))) if same_shape(found, kind) => Some(id),
        _ => None,
    }
}
