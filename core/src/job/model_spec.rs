//! `[model]`: the kind of model and its own keys, kept as the job wrote
//! them; the kind ([`super::kinds`]) parses them into its own struct.

use serde::de::{DeserializeOwned, Error as _};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use super::JobError;

/// The kind a job gets when its `[model]` names none.
pub const DEFAULT_KIND: &str = "mlp";
/// The kind of a job that names none but lists `[[model.layers]]`.
pub const LAYERS_KIND: &str = "layers";

/// `[model]`: `kind` and the kind's own keys.
#[derive(Debug, Clone, PartialEq)]
pub struct ModelSpec {
    /// The kind's name (`mlp` when the job gives none).
    pub kind: String,
    /// Every other key of the table, for the kind to parse.
    pub keys: toml::Table,
}

impl Default for ModelSpec {
    fn default() -> Self {
        Self::new(DEFAULT_KIND, toml::Table::new())
    }
}

impl ModelSpec {
    /// A `[model]` of `kind` with `keys`.
    pub fn new(kind: impl Into<String>, keys: toml::Table) -> Self {
        Self {
            kind: kind.into(),
            keys,
        }
    }

    /// The keys parsed into the kind's own struct `T` (whose serde
    /// attributes refuse unknown keys by name); `origin` names the job.
    pub fn keys<T: DeserializeOwned>(&self, origin: &str) -> Result<T, JobError> {
        T::deserialize(toml::Value::Table(self.keys.clone())).map_err(|e| JobError::Parse {
            origin: origin.to_string(),
            message: format!("[model] (kind = {:?}): {}", self.kind, e.to_string().trim_end()),
        })
    }
}

/// In TOML, `[model]` is one flat table: `kind` beside the kind's keys. On
/// the wire (postcard, which cannot carry a schemaless table) it is the
/// kind and the keys' TOML text.
impl Serialize for ModelSpec {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            let mut table = self.keys.clone();
            table.insert("kind".into(), toml::Value::String(self.kind.as_str().into()));
            table.serialize(s)
        } else {
            let text = toml::to_string(&self.keys).map_err(serde::ser::Error::custom)?;
            (self.kind.as_str(), text).serialize(s)
        }
    }
}

impl<'de> Deserialize<'de> for ModelSpec {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        if d.is_human_readable() {
            let mut keys = toml::Table::deserialize(d)?;
            let kind = match keys.remove("kind") {
                // A job that lists its layers is a layered network.
                None if keys.contains_key("layers") => LAYERS_KIND.to_string(),
                None => DEFAULT_KIND.to_string(),
                Some(toml::Value::String(kind)) => kind,
                Some(other) => return Err(D::Error::custom(format!("`kind` must be a string, not {other}"))),
            };
            Ok(Self { kind, keys })
        } else {
            let (kind, text) = <(String, String)>::deserialize(d)?;
            let keys = text.parse::<toml::Table>().map_err(D::Error::custom)?;
            Ok(Self { kind, keys })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_model_table_round_trips_through_toml_and_postcard_alike() {
        let text = "kind = \"dbn\"\nhidden = [64, 32]\ndropout = 0.25\n";
        let spec: ModelSpec = toml::from_str(text).unwrap();
        assert_eq!(spec.kind, "dbn");
        assert_eq!(spec.keys.len(), 2);
        let again: ModelSpec = toml::from_str(&toml::to_string(&spec).unwrap()).unwrap();
        assert_eq!(again, spec);
        let wire: ModelSpec = postcard::from_bytes(&postcard::to_allocvec(&spec).unwrap()).unwrap();
        assert_eq!(wire, spec);
        let none: ModelSpec = toml::from_str("hidden = [3]").unwrap();
        assert_eq!(none.kind, DEFAULT_KIND);
    }
}
