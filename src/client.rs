//! The client commands: `register`, `deregister`, `list`, over the admin API.

use serde_json::value::RawValue;
use serde_json::{Map, Value, json};

use std::io::{Read, Write};
use std::sync::Arc;

use crate::config::{
    DeregisterArgs, ExportArgs, HeartbeatArgs, ImportArgs, ListArgs, RegisterArgs, StatusArgs,
    WatchArgs,
};
use crate::registry::codec::{state_from_raw, state_to_json};
use crate::registry::store::redb::{DataDirError, RedbStore};
use crate::registry::{Observer, Registry, RegistryError, ServiceView};

/// Why a client command failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// The API could not be reached.
    #[error("cannot reach signpost at {api} (is `signpost serve` running there?): {cause}")]
    Unreachable {
        /// The API base URL.
        api: String,
        /// The innermost cause (connection refused, timed out, ...).
        cause: String,
    },
    /// A file could not be read or written.
    #[error("{path}: {source}")]
    File {
        /// The file.
        path: String,
        /// What the OS said.
        source: std::io::Error,
    },
    /// The export is not valid.
    #[error("{0}")]
    BadExport(String),
    /// The data directory cannot be used.
    #[error(transparent)]
    DataDir(#[from] DataDirError),
    /// The registry refused the import.
    #[error(transparent)]
    Registry(#[from] RegistryError),
    /// The API refused the request.
    #[error("{status}: {message}")]
    Refused {
        /// HTTP status.
        status: reqwest::StatusCode,
        /// The API's error, with its field.
        message: String,
    },
}

/// The default instance id for an address and port: `10-0-0-5-8080`.
pub fn default_id(address: &str, port: u16) -> String {
    let mut id: String = address
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '-'
            }
        })
        .collect();
    id = id.trim_matches('-').to_string();
    format!("{id}-{port}")
}

async fn call(
    method: reqwest::Method,
    api: &str,
    path: &str,
    body: Option<Value>,
) -> Result<Value, ClientError> {
    let client = reqwest::Client::new();
    let mut request = client.request(method, format!("{}{path}", base(api)));
    if let Some(body) = body {
        request = request.json(&body);
    }
    let response = request.send().await.map_err(|error| {
        let mut cause: &dyn std::error::Error = &error;
        while let Some(inner) = cause.source() {
            cause = inner;
        }
        ClientError::Unreachable {
            api: base(api).to_string(),
            cause: cause.to_string(),
        }
    })?;
    let status = response.status();
    let value: Value = response.json().await.unwrap_or(Value::Null);
    if status.is_success() {
        return Ok(value);
    }
    let error = value["error"].as_str().unwrap_or("request failed");
    let message = match value["field"].as_str() {
        Some(field) => format!("{field}: {error}"),
        None => error.to_string(),
    };
    Err(ClientError::Refused { status, message })
}

fn base(api: &str) -> &str {
    api.trim_end_matches('/')
}

/// `signpost register`.
pub async fn register(args: RegisterArgs) -> Result<(), ClientError> {
    let id = args
        .id
        .clone()
        .unwrap_or_else(|| default_id(&args.address, args.port));
    let mut body = Map::new();
    body.insert("address".into(), json!(args.address));
    body.insert("port".into(), json!(args.port));
    if let Some(w) = args.weight {
        body.insert("weight".into(), json!(w));
    }
    if let Some(p) = args.priority {
        body.insert("priority".into(), json!(p));
    }
    if !args.tags.is_empty() {
        body.insert("tags".into(), json!(args.tags));
    }
    if !args.meta.is_empty() {
        let meta: Map<String, Value> = args
            .meta
            .iter()
            .map(|(k, v)| (k.clone(), json!(v)))
            .collect();
        body.insert("meta".into(), Value::Object(meta));
    }
    for (key, value) in [
        ("cluster", &args.cluster),
        ("ttl", &args.ttl),
        ("status", &args.status),
        ("lease", &args.lease),
        ("deregister_after", &args.deregister_after),
    ] {
        if let Some(v) = value {
            body.insert(key.into(), json!(v));
        }
    }
    let path = format!("/v1/services/{}/instances/{}", args.service, id);
    let reply = call(
        reqwest::Method::PUT,
        &args.api.api,
        &path,
        Some(Value::Object(body)),
    )
    .await?;
    let i = &reply["instance"];
    println!(
        "registered {}/{} {}:{} weight {} priority {} (index {})",
        i["service"].as_str().unwrap_or_default(),
        i["id"].as_str().unwrap_or_default(),
        i["address"].as_str().unwrap_or_default(),
        i["port"],
        i["weight"],
        i["priority"],
        reply["index"]
    );
    Ok(())
}

/// `signpost deregister`.
pub async fn deregister(args: DeregisterArgs) -> Result<(), ClientError> {
    let path = format!("/v1/services/{}/instances/{}", args.service, args.id);
    let reply = call(reqwest::Method::DELETE, &args.api.api, &path, None).await?;
    println!(
        "deregistered {}/{} (index {})",
        args.service, args.id, reply["index"]
    );
    Ok(())
}

/// `signpost heartbeat`: renews once, or every `--every` until stopped.
pub async fn heartbeat(args: HeartbeatArgs) -> Result<(), ClientError> {
    let path = format!(
        "/v1/services/{}/instances/{}/heartbeat",
        args.service, args.id
    );
    loop {
        let reply = call(reqwest::Method::PUT, &args.api.api, &path, None).await?;
        println!(
            "{}/{} is {}; lease {} left",
            args.service,
            args.id,
            reply["instance"]["health"].as_str().unwrap_or_default(),
            reply["lease_remaining"].as_str().unwrap_or("?")
        );
        match args.every {
            Some(every) => tokio::time::sleep(every).await,
            None => return Ok(()),
        }
    }
}

/// `signpost status`.
pub async fn status(args: StatusArgs) -> Result<(), ClientError> {
    let path = format!("/v1/services/{}/instances/{}/status", args.service, args.id);
    let body = json!({ "status": args.status });
    let reply = call(reqwest::Method::PUT, &args.api.api, &path, Some(body)).await?;
    println!(
        "{}/{} is {} (index {})",
        args.service,
        args.id,
        reply["instance"]["status"].as_str().unwrap_or_default(),
        reply["index"]
    );
    Ok(())
}

/// `signpost watch`: follows `/v1/watch`, printing one line per change, and
/// reconnects from the last index seen if the connection drops.
pub async fn watch(args: WatchArgs) -> Result<(), ClientError> {
    let client = reqwest::Client::new();
    let mut last = args.index;
    let mut failures = 0;
    loop {
        let mut url = format!("{}/v1/watch?", base(&args.api.api));
        if let Some(service) = &args.service {
            url.push_str(&format!("service={service}&"));
        }
        if let Some(index) = last {
            url.push_str(&format!("index={index}"));
        }
        let response = match client.get(&url).send().await {
            Ok(r) if r.status().is_success() => r,
            Ok(r) => {
                let status = r.status();
                let value: Value = r.json().await.unwrap_or(Value::Null);
                let message = value["error"]
                    .as_str()
                    .unwrap_or("request failed")
                    .to_string();
                return Err(ClientError::Refused { status, message });
            }
            Err(error) if failures < 30 && last.is_some() => {
                failures += 1;
                eprintln!(
                    "connection lost ({error}); reconnecting from index {}",
                    last.unwrap_or(0)
                );
                tokio::time::sleep(std::time::Duration::from_secs(1)).await;
                continue;
            }
            Err(error) => {
                return Err(ClientError::Unreachable {
                    api: base(&args.api.api).to_string(),
                    cause: error.to_string(),
                });
            }
        };
        failures = 0;
        let mut response = response;
        let mut text = String::new();
        while let Ok(Some(chunk)) = response.chunk().await {
            text.push_str(&String::from_utf8_lossy(&chunk));
            while let Some(end) = text.find("\n\n") {
                let block: String = text.drain(..end + 2).collect();
                let field = |name: &str| {
                    block.lines().find_map(|l| {
                        l.strip_prefix(name)
                            .and_then(|v| v.strip_prefix(':'))
                            .map(str::trim)
                    })
                };
                let (Some(kind), Some(id), Some(data)) =
                    (field("event"), field("id"), field("data"))
                else {
                    continue;
                };
                last = id.parse().ok().or(last);
                if args.json {
                    println!("{data}");
                } else {
                    println!(
                        "{}",
                        describe(kind, &serde_json::from_str(data).unwrap_or(Value::Null))
                    );
                }
            }
        }
        // The stream ended (server restart or shutdown): resume from `last`.
        if last.is_none() {
            return Ok(());
        }
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    }
}

/// One line for a watch event.
fn describe(kind: &str, event: &Value) -> String {
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    let index = text(&event["index"]);
    let service = text(&event["service"]);
    match kind {
        "put" => {
            let i = &event["instance"];
            format!(
                "index {index}: put {service}/{} {}:{} weight {} priority {} {}",
                text(&i["id"]),
                text(&i["address"]),
                text(&i["port"]),
                text(&i["weight"]),
                text(&i["priority"]),
                text(&i["status"])
            )
        }
        "delete" => format!("index {index}: delete {service}/{}", text(&event["id"])),
        "settings" => format!(
            "index {index}: settings {service} lb {}",
            text(&event["settings"]["lb"])
        ),
        "reset" => format!("index {index}: reset (everything may have changed; read it again)"),
        other => format!("index {index}: {other}"),
    }
}

/// `signpost list`.
pub async fn list(args: ListArgs) -> Result<(), ClientError> {
    let path = match &args.service {
        Some(service) => format!("/v1/services/{service}"),
        None => "/v1/services".to_string(),
    };
    let reply = call(reqwest::Method::GET, &args.api.api, &path, None).await?;
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&reply).unwrap_or_default()
        );
        return Ok(());
    }
    let text = |v: &Value| match v {
        Value::String(s) => s.clone(),
        other => other.to_string(),
    };
    if args.service.is_some() {
        println!(
            "{:<24} {:<40} {:>6} {:>6} {:>8} {:<6} {:<14} {:<9} {:<10} TAGS / LAST CHECK",
            "ID", "ADDRESS", "WEIGHT", "PRIO", "CLUSTER", "TTL", "STATUS", "HEALTH", "LEASE LEFT"
        );
        for i in reply["instances"].as_array().into_iter().flatten() {
            let address = format!("{}:{}", text(&i["address"]), i["port"]);
            let tags: Vec<String> = i["tags"]
                .as_array()
                .into_iter()
                .flatten()
                .map(text)
                .collect();
            println!(
                "{:<24} {:<40} {:>6} {:>6} {:>8} {:<6} {:<14} {:<9} {:<10} {}{}",
                text(&i["id"]),
                address,
                text(&i["weight"]),
                text(&i["priority"]),
                text(&i["cluster"]),
                text(&i["ttl"]),
                text(&i["status"]),
                text(&i["health"]),
                i["lease_remaining"].as_str().unwrap_or("-"),
                tags.join(","),
                i["checks_status"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .map(|c| format!(
                        " [{}: {} at {}]",
                        text(&c["check"]),
                        text(&c["output"]),
                        text(&c["at"])
                    ))
                    .collect::<String>()
            );
        }
    } else {
        println!("{:<32} {:>9} {:>7} LB", "SERVICE", "INSTANCES", "SERVED");
        for s in reply["services"].as_array().into_iter().flatten() {
            println!(
                "{:<32} {:>9} {:>7} {}",
                text(&s["name"]),
                text(&s["instances"]),
                text(&s["served"]),
                text(&s["settings"]["lb"])
            );
        }
    }
    println!("index {}", reply["index"]);
    Ok(())
}

/// An observer for offline work on a data directory: nothing listens.
struct Offline;

impl Observer for Offline {
    fn services_changed(&self, _: &[ServiceView<'_>], _: u64) {}
}

/// `signpost export`.
pub async fn export(args: ExportArgs) -> Result<(), ClientError> {
    let doc = match &args.target.data_dir {
        Some(dir) => {
            let store = Arc::new(RedbStore::open(dir)?);
            let registry = Registry::open(store, Arc::new(Offline))
                .await
                .map_err(RegistryError::from)?;
            state_to_json(&registry.export())
        }
        None => call(reqwest::Method::GET, &args.target.api, "/v1/export", None).await?,
    };
    let text = serde_json::to_string_pretty(&doc).unwrap_or_default() + "\n";
    match &args.output {
        Some(path) => std::fs::write(path, text).map_err(|source| ClientError::File {
            path: path.display().to_string(),
            source,
        })?,
        None => std::io::stdout()
            .write_all(text.as_bytes())
            .map_err(|source| ClientError::File {
                path: "standard output".into(),
                source,
            })?,
    }
    let index = &doc["index"];
    let instances: usize = doc["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| s["instances"].as_array().map_or(0, Vec::len))
        .sum();
    eprintln!("exported {instances} instances at index {index}");
    Ok(())
}

/// `signpost import`.
pub async fn import(args: ImportArgs) -> Result<(), ClientError> {
    let path = args.file.display().to_string();
    let file_error = |source| ClientError::File {
        path: path.clone(),
        source,
    };
    let mut text = String::new();
    if path == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(file_error)?;
    } else {
        text = std::fs::read_to_string(&args.file).map_err(file_error)?;
    }
    let not_json = |e| ClientError::BadExport(format!("{path}: not JSON: {e}"));
    let index = match &args.target.data_dir {
        Some(dir) => {
            let doc: &RawValue = serde_json::from_str(&text).map_err(not_json)?;
            let backup =
                state_from_raw(doc).map_err(|e| ClientError::BadExport(format!("{path}: {e}")))?;
            drop(text);
            let store = Arc::new(RedbStore::open(dir)?);
            let registry = Registry::open(store, Arc::new(Offline))
                .await
                .map_err(RegistryError::from)?;
            registry.restore(backup, args.replace).await?
        }
        None => {
            let doc: Value = serde_json::from_str(&text).map_err(not_json)?;
            let query = if args.replace { "?replace=true" } else { "" };
            let reply = call(
                reqwest::Method::PUT,
                &args.target.api,
                &format!("/v1/import{query}"),
                Some(doc),
            )
            .await?;
            reply["index"].as_u64().unwrap_or_default()
        }
    };
    eprintln!("imported {path}; the registry is at index {index}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_labels() {
        assert_eq!(default_id("10.0.0.5", 8080), "10-0-0-5-8080");
        assert_eq!(default_id("2001:db8::1", 443), "2001-db8--1-443");
    }
}
