//! The kinds of value litestream.yml holds, read as loosely as Litestream's Go reads them (a
//! number where a string is expected, `"yes"` for a boolean) and refused with a message that
//! `Reader` puts after the key's path.
//!
//! Scalars go through `serde_json::Value`: they hold no keys that could be ignored. Mappings
//! and lists are visited in place instead, so that `serde_ignored` and `serde_path_to_error`
//! see every key below them.

use std::fmt;
use std::marker::PhantomData;
use std::time::Duration;

use serde::de::value::MapAccessDeserializer;
use serde::de::DeserializeOwned;
use serde::de::{Error, MapAccess, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer};
use serde_json::Value;

use crate::replicate::replica::parse_bool;

const NOT_A_SIZE: &str = "must be a size such as 64MB";

/// A string; a number is taken as written.
pub(super) struct Text(pub String);

impl<'de> Deserialize<'de> for Text {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::String(s) => Ok(Text(s)),
            Value::Number(n) => Ok(Text(n.to_string())),
            _ => Err(D::Error::custom("must be a string")),
        }
    }
}

/// A humantime duration (`1s`, `500ms`, `1h30m`) longer than zero.
pub(super) struct Period(pub Duration);

impl<'de> Deserialize<'de> for Period {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let Text(text) = Text::deserialize(deserializer)?;
        let parsed = humantime::parse_duration(&text).map_err(|_| {
            D::Error::custom(format!(
                "{text:?} is not a duration (like 1s, 500ms, 1h30m)"
            ))
        })?;
        if parsed.is_zero() {
            return Err(D::Error::custom("must be longer than zero"));
        }
        Ok(Period(parsed))
    }
}

/// `true`/`false`, or a string `parse_bool` knows.
pub(super) struct Flag(pub bool);

impl<'de> Deserialize<'de> for Flag {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Bool(b) => Ok(Flag(b)),
            Value::String(s) => parse_bool(&s)
                .map(Flag)
                .ok_or_else(|| D::Error::custom("must be true or false")),
            _ => Err(D::Error::custom("must be true or false")),
        }
    }
}

/// A number of bytes above zero, or a size such as `64MB` or `1GiB`.
pub(super) struct Size(pub u64);

impl<'de> Deserialize<'de> for Size {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        match Value::deserialize(deserializer)? {
            Value::Number(n) => n
                .as_u64()
                .filter(|n| *n > 0)
                .map(Size)
                .ok_or_else(|| D::Error::custom(NOT_A_SIZE)),
            Value::String(s) => match s.parse::<bytesize::ByteSize>() {
                Ok(size) if size.as_u64() > 0 => Ok(Size(size.as_u64())),
                _ => Err(D::Error::custom(format!(
                    "{s:?} is not a size such as 64MB"
                ))),
            },
            _ => Err(D::Error::custom(NOT_A_SIZE)),
        }
    }
}

/// A value dropd has always read only where it applies (`bucket` when no `url` names the
/// bucket, `endpoint` for S3), so that a file which gives one where it means nothing is not
/// refused for its value. `check` reads it when it is used.
pub(super) struct Deferred<T>(Value, PhantomData<T>);

impl<'de, T> Deserialize<'de> for Deferred<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        Value::deserialize(deserializer).map(|value| Deferred(value, PhantomData))
    }
}

impl<T: DeserializeOwned> Deferred<T> {
    /// The value, or the message it is refused with.
    pub fn check(self) -> Result<T, String> {
        T::deserialize(self.0).map_err(|e| e.to_string())
    }
}

/// A section: a mapping read into `T`. serde would also build a struct from a list of its
/// values, or take null for a missing section; Litestream's files never mean either.
pub(super) struct Mapping<T>(pub T);

impl<'de, T: Deserialize<'de>> Deserialize<'de> for Mapping<T> {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        deserializer
            .deserialize_any(MappingVisitor {
                refusal: "must be a mapping of keys to values",
                item: PhantomData,
            })
            .map(Mapping)
    }
}

/// A list of `T`; anything else is refused with `refusal`. A list whose length `len_refusal`
/// has a message for is refused with that message before any item is read, as an item's own
/// error would point away from what is wrong.
pub(super) fn list<'de, D, T>(
    deserializer: D,
    refusal: &'static str,
    len_refusal: fn(usize) -> Option<&'static str>,
) -> Result<Vec<T>, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de>,
{
    deserializer.deserialize_any(ListVisitor {
        refusal,
        len_refusal,
        item: PhantomData,
    })
}

/// Visitor methods for the shapes a visitor refuses, with one message where serde's would name
/// Rust types. serde_json's `Value` hands over no other shapes.
macro_rules! refuse {
    ($($visit:ident($arg:ty)),*) => {
        $(fn $visit<E: Error>(self, _: $arg) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal))
        })*
        fn visit_unit<E: Error>(self) -> Result<Self::Value, E> {
            Err(E::custom(self.refusal))
        }
    };
}

struct MappingVisitor<T> {
    refusal: &'static str,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for MappingVisitor<T> {
    type Value = T;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.refusal)
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<T, A::Error> {
        Err(A::Error::custom(self.refusal))
    }

    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<T, A::Error> {
        T::deserialize(MapAccessDeserializer::new(map))
    }
}

struct ListVisitor<T> {
    refusal: &'static str,
    len_refusal: fn(usize) -> Option<&'static str>,
    item: PhantomData<T>,
}

impl<'de, T: Deserialize<'de>> Visitor<'de> for ListVisitor<T> {
    type Value = Vec<T>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.refusal)
    }

    refuse!(
        visit_bool(bool),
        visit_i64(i64),
        visit_u64(u64),
        visit_f64(f64),
        visit_str(&str)
    );

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Vec<T>, A::Error> {
        Err(A::Error::custom(self.refusal))
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<T>, A::Error> {
        let too = |len| (self.len_refusal)(len).map(A::Error::custom);
        if let Some(err) = seq.size_hint().and_then(too) {
            return Err(err);
        }
        let mut items = Vec::new();
        while let Some(item) = seq.next_element()? {
            items.push(item);
        }
        match too(items.len()) {
            Some(err) => Err(err),
            None => Ok(items),
        }
    }
}
