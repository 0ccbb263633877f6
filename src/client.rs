//! The client commands: `register`, `deregister`, `list`, over the admin API.

use serde_json::{Map, Value, json};

use crate::config::{DeregisterArgs, ListArgs, RegisterArgs};

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
            "{:<24} {:<40} {:>6} {:>6} {:>8} {:<6} {:<14} TAGS",
            "ID", "ADDRESS", "WEIGHT", "PRIO", "CLUSTER", "TTL", "STATUS"
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
                "{:<24} {:<40} {:>6} {:>6} {:>8} {:<6} {:<14} {}",
                text(&i["id"]),
                address,
                text(&i["weight"]),
                text(&i["priority"]),
                text(&i["cluster"]),
                text(&i["ttl"]),
                text(&i["status"]),
                tags.join(",")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn default_ids_are_labels() {
        assert_eq!(default_id("10.0.0.5", 8080), "10-0-0-5-8080");
        assert_eq!(default_id("2001:db8::1", 443), "2001-db8--1-443");
    }
}
