//! Per-connection config: schema defaults, the effective config, validation against the
//! connector's schema and its `validate-config` hook.

use super::*;

pub use crate::runtime::schema_defaults;

/// `base ⊕ over` for JSON objects (top level).
pub(super) fn merge(base: &mut serde_json::Map<String, Value>, over: &Value) {
    if let Some(o) = over.as_object() {
        for (k, v) in o {
            base.insert(k.clone(), v.clone());
        }
    }
}

impl Service {
    /// Validates a config against the connector's schema and `validate-config`, defaults applied.
    pub async fn validate_config(
        &self,
        connector: &crate::runtime::Connector,
        config: &Value,
    ) -> Result<Value> {
        if !config.is_object() {
            return Err(Error::Invalid {
                message: "config must be a JSON object".into(),
                fields: vec![],
            });
        }
        let schema = crate::runtime::config_schema(&connector.manifest().config_schema)
            .map_err(|e| Error::Internal(e.to_string()))?;
        let mut merged = schema_defaults(&schema);
        merge(&mut merged, config);
        let merged = Value::Object(merged);
        let validator =
            jsonschema::validator_for(&schema).map_err(|e| Error::Internal(e.to_string()))?;
        let mut fields: Vec<(String, String)> = validator
            .iter_errors(&merged)
            .map(|e| (e.instance_path().to_string(), e.to_string()))
            .collect();
        if fields.is_empty() {
            let extra = connector
                .validate_config(&merged.to_string())
                .await
                .map_err(|e| {
                    Error::Upstream(format!("the connector could not check the config: {e}"))
                })?;
            fields.extend(extra.into_iter().map(|f| (f.path, f.message)));
        }
        if !fields.is_empty() {
            let summary = fields
                .iter()
                .map(|(p, m)| format!("{}: {m}", if p.is_empty() { "/" } else { p }))
                .collect::<Vec<_>>()
                .join("; ");
            return Err(Error::Invalid {
                message: format!("the config is invalid: {summary}"),
                fields,
            });
        }
        Ok(config.clone())
    }

    /// The effective config: schema defaults ⊕ the connection's config ⊕ `overrides` (for
    /// callers who may use the connection).
    pub async fn effective_config(
        &self,
        who: &Principal,
        id: &str,
        overrides: &Value,
    ) -> Result<Value> {
        let c = self.connection_for(who, id, Need::Use).await?;
        self.effective_config_of(&c, overrides)
    }

    /// The effective config of a connection already read.
    pub fn effective_config_of(&self, c: &ConnectionRow, overrides: &Value) -> Result<Value> {
        let entry = self.connector(&c.connector_id)?;
        let schema: Value = serde_json::from_str(&entry.connector.manifest().config_schema)
            .map_err(|e| Error::Internal(format!("the connector's config schema: {e}")))?;
        let mut merged = schema_defaults(&schema);
        merge(
            &mut merged,
            &serde_json::from_str(&c.config).unwrap_or(Value::Null),
        );
        merge(&mut merged, overrides);
        Ok(Value::Object(merged))
    }
}
