//! The coordinator's session settings travel with its stage plans to the workers.
//!
//! datafusion-distributed builds a worker's task session from DataFusion's defaults and sends
//! only the config extensions registered with it (`distributed.*`), so a `SET datafusion.…` or
//! `SET apiary.…` would hold on the coordinator alone. Apiary sends the settings a session
//! changed from its node's own as headers of every plan request (datafusion-distributed's
//! passthrough headers), and a worker applies them on top of its node's settings. Values sized
//! to a node — target partitions, batch size, spill reservation — stay each node's own unless
//! the session set them. `swarm.*` only steers the coordinator and is not sent.

use std::collections::HashMap;
use std::sync::Arc;

use apiary_exec::BeeOptions;
use datafusion::common::config::ConfigOptions;
use datafusion::common::plan_datafusion_err;
use datafusion::error::Result;
use datafusion::execution::TaskContext;
use datafusion::prelude::SessionConfig;
use datafusion_distributed::DistributedExt;
use http::{HeaderMap, HeaderName, HeaderValue};

/// Header of one setting: this, then the setting's key (`datafusion.execution.batch_size`).
const HEADER: &str = "x-apiary-setting-";

/// The config extensions that travel, besides DataFusion's own `datafusion.*`.
const EXTENSIONS: [&str; 1] = ["apiary"];

/// A node's own settings, the baseline a session's changes are measured against: the values
/// of the namespaces that travel, read once per session.
#[derive(Debug, Default)]
pub(crate) struct NodeSettings(HashMap<String, String>);

impl NodeSettings {
    pub(crate) fn of(node: &ConfigOptions) -> Self {
        Self(
            travelling(node)
                .into_iter()
                .filter_map(|(key, value)| Some((key, value?)))
                .collect(),
        )
    }

    /// The settings of `session` that differ from the node's, as headers (values
    /// percent-encoded: a header carries visible ASCII only).
    pub(crate) fn changed(&self, session: &ConfigOptions) -> Result<HeaderMap> {
        let mut headers = HeaderMap::new();
        for (key, value) in travelling(session) {
            // A setting the session unset cannot be said in a header; the worker keeps its own.
            let Some(value) = value else { continue };
            if self.0.get(&key) == Some(&value) {
                continue;
            }
            let name = HeaderName::try_from(format!("{HEADER}{key}"))
                .map_err(|e| plan_datafusion_err!("setting {key} cannot be sent: {e}"))?;
            let encoded = HeaderValue::try_from(encode(&value))
                .map_err(|e| plan_datafusion_err!("setting {key} cannot be sent: {e}"))?;
            headers.insert(name, encoded);
        }
        Ok(headers)
    }
}

/// The settings of `options` that travel, by full key: DataFusion's own, and those of
/// [`EXTENSIONS`] (whose entries DataFusion lists without their prefix).
fn travelling(options: &ConfigOptions) -> Vec<(String, Option<String>)> {
    let own = options
        .entries()
        .into_iter()
        .filter(|e| e.key.starts_with("datafusion."))
        .map(|e| (e.key, e.value));
    let extensions = options
        .extensions
        .iter()
        .filter(|(prefix, _)| EXTENSIONS.contains(prefix))
        .flat_map(|(prefix, extension)| {
            extension
                .entries()
                .into_iter()
                .map(move |e| (format!("{prefix}.{}", e.key), e.value))
        });
    own.chain(extensions).collect()
}

/// `context` with `settings` as the passthrough headers of the plan requests it sends.
pub(crate) fn sending(context: &TaskContext, settings: &HeaderMap) -> Result<Arc<TaskContext>> {
    let config = context
        .session_config()
        .clone()
        .with_distributed_passthrough_headers(settings.clone())?;
    Ok(Arc::new(TaskContext::new(
        context.task_id(),
        context.session_id(),
        config,
        context.scalar_functions().clone(),
        context.higher_order_functions().clone(),
        context.aggregate_functions().clone(),
        context.window_functions().clone(),
        context.runtime_env(),
    )))
}

/// Applies the coordinator's settings found in `headers` to a worker's task `config` (which
/// gets the `apiary.*` extension for them); a value this worker cannot take fails the task with
/// the setting's name.
pub(crate) fn apply(config: &mut SessionConfig, headers: &HeaderMap) -> Result<()> {
    let extensions = &mut config.options_mut().extensions;
    if extensions.get::<BeeOptions>().is_none() {
        extensions.insert(BeeOptions::default());
    }
    for (name, value) in headers {
        let Some(key) = name.as_str().strip_prefix(HEADER) else {
            continue;
        };
        let value = value
            .to_str()
            .ok()
            .and_then(decode)
            .ok_or_else(|| plan_datafusion_err!("the coordinator sent a bad value of {key}"))?;
        config
            .options_mut()
            .set(key, &value)
            .map_err(|e| e.context(format!("the coordinator's setting {key} = '{value}'")))?;
    }
    Ok(())
}

/// `%XX` for every byte but ASCII letters, digits and `._-`.
fn encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for b in value.bytes() {
        if b.is_ascii_alphanumeric() || b"._-".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

/// The inverse of [`encode`]; `None` for a malformed escape or bytes that are not UTF-8.
fn decode(value: &str) -> Option<String> {
    let bytes = value.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = std::str::from_utf8(bytes.get(i + 1..i + 3)?).ok()?;
            out.push(u8::from_str_radix(hex, 16).ok()?);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_survive_the_header() {
        for value in ["0.0", "Europe/Zürich", "a b%c", "", "∅"] {
            let encoded = encode(value);
            assert!(HeaderValue::try_from(encoded.as_str()).is_ok(), "{encoded}");
            assert_eq!(decode(&encoded).as_deref(), Some(value));
        }
        assert_eq!(decode("%G0"), None);
        assert_eq!(decode("%4"), None);
    }

    #[test]
    fn only_what_the_session_changed_travels_and_lands() {
        let mut node = ConfigOptions::default();
        node.extensions.insert(BeeOptions::default());
        let mut session = node.clone();
        session
            .execution
            .skip_partial_aggregation_probe_ratio_threshold = 0.25;
        session.execution.time_zone = Some("+05:00".into());
        session.set("apiary.timeout_ms", "1500").unwrap();
        let headers = NodeSettings::of(&node).changed(&session).unwrap();
        assert_eq!(headers.len(), 3, "{headers:?}");

        let mut worker = SessionConfig::new();
        apply(&mut worker, &headers).unwrap();
        let execution = &worker.options().execution;
        assert_eq!(
            execution.skip_partial_aggregation_probe_ratio_threshold,
            0.25
        );
        assert_eq!(execution.time_zone.as_deref(), Some("+05:00"));
        let bees = worker.options().extensions.get::<BeeOptions>().unwrap();
        assert_eq!(bees.timeout_ms, 1500);
    }
}
