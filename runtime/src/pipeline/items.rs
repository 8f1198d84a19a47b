//! The accepted output of a run ([`Items`]) and how it is written into the envelope: the guest's
//! own JSON text, spliced item by item as the array is walked (no list of the items and no value
//! tree is built), with the server stamp of a plugin that has a postgres grant.
//!
//! Server stamp: the items of a plugin with a postgres grant carry `"server": "NAME"` (the
//! grant's server), added by the host, never taken from the guest (`validate` refuses an item
//! that sets a top-level `server` itself). The stamp is kept beside the items and written as
//! the first field of each item while it is serialized; the item's other fields follow as the
//! guest's raw JSON values, so stamping copies no item.

use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::ser::{Serialize, SerializeMap, SerializeSeq, Serializer};
use serde_json::value::RawValue;

/// The field the host stamps into every item of a plugin with a postgres grant.
pub const SERVER_FIELD: &str = "server";

/// The accepted output of one run: the guest's JSON array as it was returned, validated, and
/// the server its items are stamped with.
#[derive(Debug, Clone)]
pub struct Items {
    /// A JSON array of objects: only `validate` (which checked it) and [`Items::empty`] make
    /// one, so it is never parsed again to be trusted.
    array: Box<str>,
    len: usize,
    server: Option<Arc<str>>,
}

impl Items {
    /// Items checked by `validate` (`len` of them in `array`), stamped with `server` if any.
    pub(super) fn new(array: Box<str>, len: usize, server: Option<Arc<str>>) -> Self {
        Self { array, len, server }
    }

    /// No items.
    pub fn empty() -> Self {
        Self {
            array: "[]".into(),
            len: 0,
            server: None,
        }
    }

    /// The server written into every item as `server`, if any.
    pub fn server(&self) -> Option<&str> {
        self.server.as_deref()
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// The items, each the raw JSON text of one object as the guest wrote it (without the
    /// server stamp, which is added when they are serialized).
    pub fn iter(&self) -> impl Iterator<Item = &RawValue> {
        // The array was validated when `self` was made, so this cannot fail.
        let items: Vec<&RawValue> = serde_json::from_str(&self.array).unwrap_or_default();
        items.into_iter()
    }

    /// The whole array as JSON text, as the guest wrote it (without the server stamp).
    pub fn as_json(&self) -> &str {
        &self.array
    }

    /// About how many bytes the items take once serialized, stamp included.
    pub fn serialized_len(&self) -> usize {
        let stamp = self.server.as_deref().map_or(0, |s| s.len() + 16);
        self.array.len() + self.len * stamp
    }

    /// Serializes each item, stamped, into `seq`, as the array is walked (no list of the items
    /// is built: 71 000 small items would cost another pointer pair each).
    fn serialize_into<S: SerializeSeq>(&self, seq: &mut S) -> Result<(), S::Error> {
        let server = self.server.as_deref();
        let mut failed = None;
        let mut de = serde_json::Deserializer::from_str(&self.array);
        let walked = de.deserialize_seq(EachItem(|item: &RawValue| {
            let written = match server {
                None => seq.serialize_element(item),
                Some(server) => seq.serialize_element(&Stamped { server, item }),
            };
            written.map_err(|e| failed = Some(e)).is_ok()
        }));
        match (failed, walked) {
            (Some(error), _) => Err(error),
            (None, Ok(())) => Ok(()),
            (None, Err(e)) => Err(serde::ser::Error::custom(format!(
                "items changed after validation: {e}"
            ))),
        }
    }
}

impl Serialize for Items {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut seq = serializer.serialize_seq(Some(self.len))?;
        self.serialize_into(&mut seq)?;
        seq.end()
    }
}

/// Serializes several runs' items as one JSON array (the envelope's `metrics`).
pub fn serialize_items_flat<S: Serializer>(
    runs: &[Items],
    serializer: S,
) -> Result<S::Ok, S::Error> {
    let mut seq = serializer.serialize_seq(Some(runs.iter().map(Items::len).sum()))?;
    for run in runs {
        run.serialize_into(&mut seq)?;
    }
    seq.end()
}

/// Calls `self.0` on each element of an array, as it is reached, until it returns false.
struct EachItem<F>(F);

impl<'de, F: FnMut(&'de RawValue) -> bool> Visitor<'de> for EachItem<F> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an array")
    }
    fn visit_seq<A: SeqAccess<'de>>(mut self, mut seq: A) -> Result<(), A::Error> {
        while let Some(item) = seq.next_element::<&'de RawValue>()? {
            if !(self.0)(item) {
                return Err(de::Error::custom("stopped by the serializer"));
            }
        }
        Ok(())
    }
}

/// One item with the server stamp as its first field: its own top-level fields follow, each
/// value written as the guest's raw JSON text (only the list of top-level fields is held). The
/// field names are written anew, so an escape in a name (`"\u0061"`) comes out decoded (`"a"`).
struct Stamped<'a> {
    server: &'a str,
    item: &'a RawValue,
}

impl Serialize for Stamped<'_> {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut de = serde_json::Deserializer::from_str(self.item.get());
        // Validated as an object without a `server` field when the items were made.
        let fields = de.deserialize_map(TopLevel).map_err(|e| {
            serde::ser::Error::custom(format!("item changed after validation: {e}"))
        })?;
        let mut map = serializer.serialize_map(Some(fields.len() + 1))?;
        map.serialize_entry(SERVER_FIELD, self.server)?;
        for (key, value) in &fields {
            map.serialize_entry(key.as_ref(), value)?;
        }
        map.end()
    }
}

/// The top-level fields of an object: names (borrowed unless escaped) and raw values.
struct TopLevel;

impl<'de> Visitor<'de> for TopLevel {
    type Value = Vec<(Cow<'de, str>, &'de RawValue)>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("an object")
    }
    fn visit_map<M: MapAccess<'de>>(self, mut map: M) -> Result<Self::Value, M::Error> {
        let mut fields = Vec::with_capacity(map.size_hint().unwrap_or(8));
        while let Some(key) = map.next_key_seed(Key)? {
            fields.push((key, map.next_value::<&'de RawValue>()?));
        }
        Ok(fields)
    }
}

/// An object key: borrowed from the text unless it has escapes.
struct Key;

impl<'de> DeserializeSeed<'de> for Key {
    type Value = Cow<'de, str>;
    fn deserialize<D: Deserializer<'de>>(self, de: D) -> Result<Self::Value, D::Error> {
        de.deserialize_str(self)
    }
}

impl<'de> Visitor<'de> for Key {
    type Value = Cow<'de, str>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a field name")
    }
    fn visit_borrowed_str<E: de::Error>(self, v: &'de str) -> Result<Self::Value, E> {
        Ok(Cow::Borrowed(v))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<Self::Value, E> {
        Ok(Cow::Owned(v.to_owned()))
    }
}
