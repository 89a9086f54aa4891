//! `[telemetry]`: each tick as an OpenTelemetry trace over OTLP/HTTP, configured the
//! standard way (the `OTEL_*` variables of the OpenTelemetry specification), with this
//! section's keys overriding them. Off when no endpoint is set anywhere.
//!
//! What is resolved here is plain data ([`TelemetrySettings`]); `telemetry` builds the
//! exporter from it. The header values (a Langfuse or Honeycomb API key) are secrets.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde::{Deserialize, Serialize};

use super::secret::{self, Secret, SecretLookup};
use super::{ConfigError, Env};
use crate::time::HumanDuration;

/// The OTLP encodings over HTTP (gRPC is not built in: Langfuse, the strictest of the
/// backends, takes HTTP only).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub enum OtlpProtocol {
    #[serde(rename = "http/protobuf")]
    HttpProtobuf,
    #[serde(rename = "http/json")]
    HttpJson,
}

impl OtlpProtocol {
    fn parse(text: &str) -> Result<Self, String> {
        match text.trim() {
            "http/protobuf" => Ok(Self::HttpProtobuf),
            "http/json" => Ok(Self::HttpJson),
            "grpc" => Err("`grpc` is not supported: use http/protobuf (every OTLP receiver takes it)".into()),
            other => Err(format!(
                "`{other}` is not an OTLP protocol: use http/protobuf or http/json"
            )),
        }
    }
}

/// Which ticks are traced (`OTEL_TRACES_SAMPLER`, its `_ARG` the ratio).
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum SamplerSetting {
    AlwaysOn,
    AlwaysOff,
    TraceIdRatio(f64),
    ParentBasedAlwaysOn,
    ParentBasedAlwaysOff,
    ParentBasedTraceIdRatio(f64),
}

impl SamplerSetting {
    fn parse(name: &str, arg: Option<&str>) -> Result<Self, String> {
        let ratio = || -> Result<f64, String> {
            match arg.map(str::trim).filter(|a| !a.is_empty()) {
                None => Ok(1.0),
                Some(text) => text
                    .parse::<f64>()
                    .ok()
                    .filter(|r| (0.0..=1.0).contains(r))
                    .ok_or_else(|| format!("the sampler's argument `{text}` is not a ratio between 0 and 1")),
            }
        };
        Ok(match name.trim() {
            "always_on" => Self::AlwaysOn,
            "always_off" => Self::AlwaysOff,
            "traceidratio" => Self::TraceIdRatio(ratio()?),
            "parentbased_always_on" => Self::ParentBasedAlwaysOn,
            "parentbased_always_off" => Self::ParentBasedAlwaysOff,
            "parentbased_traceidratio" => Self::ParentBasedTraceIdRatio(ratio()?),
            other => {
                return Err(format!(
                    "`{other}` is not a sampler: use always_on, always_off, traceidratio, \
                     parentbased_always_on, parentbased_always_off or parentbased_traceidratio"
                ));
            }
        })
    }
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct TelemetryConfig {
    /// `false` turns export off whatever the environment says (as `OTEL_SDK_DISABLED=true`).
    pub enabled: Option<bool>,
    /// The collector's base URL; `/v1/traces` is appended (`OTEL_EXPORTER_OTLP_ENDPOINT`).
    pub endpoint: Option<String>,
    /// The traces URL as it is (`OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`).
    pub traces_endpoint: Option<String>,
    /// `http/protobuf` (the default) or `http/json` (`OTEL_EXPORTER_OTLP_PROTOCOL`).
    pub protocol: Option<OtlpProtocol>,
    /// A file holding the headers as `key=value,key=value` (values percent-encoded).
    pub headers_file: Option<PathBuf>,
    /// The variable holding them; `OTEL_EXPORTER_OTLP_TRACES_HEADERS` is read first.
    pub headers_env: String,
    /// `service.name` (`OTEL_SERVICE_NAME`); default `persona-runner`.
    pub service_name: Option<String>,
    /// Resource attributes, over `OTEL_RESOURCE_ATTRIBUTES`.
    pub resource_attributes: BTreeMap<String, String>,
    /// `OTEL_TRACES_SAMPLER`; default `parentbased_always_on`.
    pub sampler: Option<String>,
    /// `OTEL_TRACES_SAMPLER_ARG`.
    pub sampler_arg: Option<String>,
    /// Prompts, arguments and outputs on the spans (redacted and capped like the
    /// transcript); `OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT`. Off by default.
    pub content: Option<bool>,
    /// A link to a tick's trace in the operator's viewer, `{trace_id}` replaced:
    /// `http://localhost:16686/trace/{trace_id}` (Jaeger).
    pub trace_url: Option<String>,
    /// Spans held for export at most; more are dropped (and counted), never waited for.
    pub queue_size: usize,
    /// How long one export may take.
    pub export_timeout: HumanDuration,
}

impl Default for TelemetryConfig {
    fn default() -> Self {
        Self {
            enabled: None,
            endpoint: None,
            traces_endpoint: None,
            protocol: None,
            headers_file: None,
            headers_env: "OTEL_EXPORTER_OTLP_HEADERS".into(),
            service_name: None,
            resource_attributes: BTreeMap::new(),
            sampler: None,
            sampler_arg: None,
            content: None,
            trace_url: None,
            queue_size: 2048,
            export_timeout: HumanDuration(std::time::Duration::from_secs(10)),
        }
    }
}

/// Export as resolved from the section and the environment.
#[derive(Clone, Debug)]
pub struct TelemetrySettings {
    /// The full traces URL.
    pub endpoint: String,
    pub protocol: OtlpProtocol,
    /// Header names and their secret values.
    pub headers: Vec<(String, Secret)>,
    pub service_name: String,
    pub resource: Vec<(String, String)>,
    pub sampler: SamplerSetting,
    pub content: bool,
    pub queue_size: usize,
    pub export_timeout: std::time::Duration,
}

fn invalid(key: &str, message: String) -> ConfigError {
    ConfigError::Invalid {
        key: key.into(),
        origin: String::new(),
        message,
    }
}

fn truthy(value: &str) -> bool {
    value.trim().eq_ignore_ascii_case("true")
}

/// `%XX` escapes decoded (the OTLP header and resource-attribute syntax).
fn percent_decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes.get(i + 1..i + 3).and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(byte)) => {
                out.push(byte);
                i += 3;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// `key=value,key=value` pairs; `what` names the setting in the error.
fn pairs(text: &str, what: &str) -> Result<Vec<(String, String)>, String> {
    text.split(',')
        .filter(|item| !item.trim().is_empty())
        .map(|item| match item.split_once('=') {
            Some((key, value)) if !key.trim().is_empty() => {
                Ok((percent_decode(key.trim()), percent_decode(value.trim())))
            }
            // Never the item itself: it may hold a header's secret value.
            _ => Err(format!("{what} must be `key=value` pairs separated by commas")),
        })
        .collect()
}

impl TelemetryConfig {
    /// Whether anything asks for export, and how: `Ok(None)` when it is off.
    pub fn resolve(&self, env: &Env) -> Result<Option<TelemetrySettings>, ConfigError> {
        let var = |name: &str| env.get(name).map(|v| v.trim()).filter(|v| !v.is_empty());
        let disabled = match self.enabled {
            Some(enabled) => !enabled,
            None => var("OTEL_SDK_DISABLED").is_some_and(truthy) || var("OTEL_TRACES_EXPORTER") == Some("none"),
        };
        let endpoint = if let Some(url) = self.traces_endpoint.as_deref() {
            Some(("telemetry.traces_endpoint", url.to_string()))
        } else if let Some(base) = self.endpoint.as_deref() {
            Some(("telemetry.endpoint", traces_url(base)))
        } else if let Some(url) = var("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") {
            Some(("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", url.to_string()))
        } else if let Some(base) = var("OTEL_EXPORTER_OTLP_ENDPOINT") {
            Some(("OTEL_EXPORTER_OTLP_ENDPOINT", traces_url(base)))
        } else if self.enabled == Some(true) {
            Some(("telemetry.enabled", "http://localhost:4318/v1/traces".to_string()))
        } else {
            None
        };
        let Some((endpoint_key, endpoint)) = endpoint.filter(|_| !disabled) else {
            return Ok(None);
        };
        if !(endpoint.starts_with("http://") || endpoint.starts_with("https://")) {
            // Never the value itself: an endpoint may carry a key in its query.
            return Err(invalid(endpoint_key, "is not an http:// or https:// URL".into()));
        }
        let protocol = match (
            self.protocol,
            var("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL").or(var("OTEL_EXPORTER_OTLP_PROTOCOL")),
        ) {
            (Some(protocol), _) => protocol,
            (None, Some(text)) => {
                OtlpProtocol::parse(text).map_err(|message| invalid("OTEL_EXPORTER_OTLP_PROTOCOL", message))?
            }
            (None, None) => OtlpProtocol::HttpProtobuf,
        };
        let sampler_name = self
            .sampler
            .clone()
            .or_else(|| var("OTEL_TRACES_SAMPLER").map(str::to_string))
            .unwrap_or_else(|| "parentbased_always_on".into());
        let sampler_arg = self
            .sampler_arg
            .clone()
            .or_else(|| var("OTEL_TRACES_SAMPLER_ARG").map(str::to_string));
        let sampler = SamplerSetting::parse(&sampler_name, sampler_arg.as_deref())
            .map_err(|message| invalid("telemetry.sampler", message))?;
        let mut resource: BTreeMap<String, String> = match var("OTEL_RESOURCE_ATTRIBUTES") {
            Some(text) => pairs(text, "OTEL_RESOURCE_ATTRIBUTES")
                .map_err(|message| invalid("OTEL_RESOURCE_ATTRIBUTES", message))?
                .into_iter()
                .collect(),
            None => BTreeMap::new(),
        };
        resource.extend(self.resource_attributes.clone());
        let service_name = self
            .service_name
            .clone()
            .or_else(|| var("OTEL_SERVICE_NAME").map(str::to_string))
            .or_else(|| resource.get("service.name").cloned())
            .unwrap_or_else(|| "persona-runner".into());
        resource.remove("service.name");
        let content = match self.content {
            Some(content) => content,
            None => var("OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT").is_some_and(truthy),
        };
        Ok(Some(TelemetrySettings {
            endpoint,
            protocol,
            headers: self.headers(env)?,
            service_name,
            resource: resource.into_iter().collect(),
            sampler,
            content,
            queue_size: self.queue_size,
            export_timeout: self.export_timeout.0,
        }))
    }

    /// The export's headers: the traces variable, else the configured file, variable or
    /// systemd credential (`otlp-headers`).
    fn headers(&self, env: &Env) -> Result<Vec<(String, Secret)>, ConfigError> {
        let signal = env
            .get("OTEL_EXPORTER_OTLP_TRACES_HEADERS")
            .filter(|v| !v.trim().is_empty())
            .map(|v| (Secret::new(v.clone()), "OTEL_EXPORTER_OTLP_TRACES_HEADERS".to_string()));
        let lookup = SecretLookup {
            key: "telemetry.headers",
            file: self.headers_file.as_deref(),
            env_var: Some(&self.headers_env),
            credential: "otlp-headers",
        };
        let found = match signal {
            Some(found) => Some(found),
            None => secret::resolve(&lookup, env)?.map(|(value, origin)| (value, origin.to_string())),
        };
        let Some((text, origin)) = found else {
            return Ok(Vec::new());
        };
        let parsed =
            pairs(text.expose(), &format!("the headers in {origin}")).map_err(|message| ConfigError::Secret {
                key: "telemetry.headers".into(),
                message,
            })?;
        Ok(parsed
            .into_iter()
            .map(|(name, value)| (name, Secret::new(value)))
            .collect())
    }
}

/// The traces URL under a collector's base URL.
fn traces_url(base: &str) -> String {
    format!("{}/v1/traces", base.trim_end_matches('/'))
}

/// The most spans a queue may hold (the SDK allocates its channel up front).
const MAX_QUEUE: usize = 65_536;

/// `[telemetry]`'s own rules.
pub(super) fn validate(config: &TelemetryConfig) -> Result<(), (&'static str, String)> {
    if let Some(url) = &config.trace_url
        && !url.contains("{trace_id}")
    {
        return Err((
            "telemetry.trace_url",
            format!(
                "`{url}` has no `{{trace_id}}` to put the trace in, e.g. http://localhost:16686/trace/{{trace_id}}"
            ),
        ));
    }
    if !(1..=MAX_QUEUE).contains(&config.queue_size) {
        return Err((
            "telemetry.queue_size",
            format!("must be between 1 and {MAX_QUEUE} (the queue is allocated up front)"),
        ));
    }
    if let Some(name) = &config.sampler {
        SamplerSetting::parse(name, config.sampler_arg.as_deref()).map_err(|m| ("telemetry.sampler", m))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Env {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn off_when_nothing_is_set_or_when_disabled() {
        let config = TelemetryConfig::default();
        assert!(config.resolve(&Env::new()).unwrap().is_none());
        let set = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318"),
            ("OTEL_SDK_DISABLED", "true"),
        ]);
        assert!(config.resolve(&set).unwrap().is_none());
        let off = TelemetryConfig {
            enabled: Some(false),
            ..Default::default()
        };
        assert!(
            off.resolve(&env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4318")]))
                .unwrap()
                .is_none()
        );
    }

    #[test]
    fn the_standard_variables_configure_it_and_the_section_overrides_them() {
        let vars = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector:4318/"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "http/json"),
            ("OTEL_SERVICE_NAME", "qa-runner"),
            (
                "OTEL_RESOURCE_ATTRIBUTES",
                "deployment.environment=staging,team=qa%20core",
            ),
            (
                "OTEL_EXPORTER_OTLP_HEADERS",
                "Authorization=Basic%20c2VjcmV0,x-tenant=7",
            ),
            ("OTEL_TRACES_SAMPLER", "traceidratio"),
            ("OTEL_TRACES_SAMPLER_ARG", "0.25"),
        ]);
        let settings = TelemetryConfig::default().resolve(&vars).unwrap().unwrap();
        assert_eq!(settings.endpoint, "http://collector:4318/v1/traces");
        assert_eq!(settings.protocol, OtlpProtocol::HttpJson);
        assert_eq!(settings.service_name, "qa-runner");
        assert_eq!(settings.sampler, SamplerSetting::TraceIdRatio(0.25));
        assert!(settings.resource.contains(&("team".into(), "qa core".into())));
        let headers: Vec<(&str, &str)> = settings.headers.iter().map(|(k, v)| (k.as_str(), v.expose())).collect();
        assert_eq!(headers, [("Authorization", "Basic c2VjcmV0"), ("x-tenant", "7")]);
        assert!(
            !format!("{settings:?}").contains("c2VjcmV0"),
            "header values are redacted in Debug"
        );

        let section = TelemetryConfig {
            traces_endpoint: Some("https://cloud.langfuse.com/api/public/otel/v1/traces".into()),
            protocol: Some(OtlpProtocol::HttpProtobuf),
            service_name: Some("from-config".into()),
            ..Default::default()
        };
        let settings = section.resolve(&vars).unwrap().unwrap();
        assert_eq!(
            settings.endpoint,
            "https://cloud.langfuse.com/api/public/otel/v1/traces"
        );
        assert_eq!(settings.protocol, OtlpProtocol::HttpProtobuf);
        assert_eq!(settings.service_name, "from-config");
    }

    #[test]
    fn bad_values_name_the_variable_and_never_echo_a_header() {
        let grpc = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c:4317"),
            ("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc"),
        ]);
        let err = TelemetryConfig::default().resolve(&grpc).unwrap_err().to_string();
        assert!(
            err.contains("OTEL_EXPORTER_OTLP_PROTOCOL") && err.contains("http/protobuf"),
            "{err}"
        );
        let headers = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_EXPORTER_OTLP_HEADERS", "sk-very-secret"),
        ]);
        let err = TelemetryConfig::default().resolve(&headers).unwrap_err().to_string();
        assert!(
            err.contains("telemetry.headers") && !err.contains("sk-very-secret"),
            "{err}"
        );
        let sampler = env(&[
            ("OTEL_EXPORTER_OTLP_ENDPOINT", "http://c"),
            ("OTEL_TRACES_SAMPLER", "sometimes"),
        ]);
        let err = TelemetryConfig::default().resolve(&sampler).unwrap_err().to_string();
        assert!(err.contains("telemetry.sampler") && err.contains("sometimes"), "{err}");
        let url = env(&[("OTEL_EXPORTER_OTLP_ENDPOINT", "collector:4318")]);
        let err = TelemetryConfig::default().resolve(&url).unwrap_err().to_string();
        assert!(err.contains("OTEL_EXPORTER_OTLP_ENDPOINT"), "{err}");
    }
}
