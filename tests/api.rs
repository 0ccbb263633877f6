//! The admin API through its router, without a socket: validation names the
//! field, nothing a bad request says changes state, every response carries
//! the registry index.

use std::sync::Arc;

use axum::body::Body;
use axum::http::{Request, StatusCode};
use http_body_util::BodyExt;
use serde_json::{Value, json};
use signpost::api::{INDEX_HEADER, MAX_BODY, router};
use signpost::registry::model::Cluster;
use signpost::registry::store::MemoryStore;
use signpost::registry::{Observer, Registry, ServiceView};
use tower::ServiceExt;

struct Nobody;
impl Observer for Nobody {
    fn services_changed(&self, _: &[ServiceView<'_>], _: u64) {}
}

/// The router, and the server's stop signal (kept, never sent).
struct Api(
    axum::Router,
    #[allow(dead_code)] tokio::sync::watch::Sender<bool>,
);

impl Api {
    async fn new() -> Self {
        let registry = Registry::open(Arc::new(MemoryStore::new()), Arc::new(Nobody))
            .await
            .unwrap();
        let (stop, stopping) = tokio::sync::watch::channel(false);
        Self(
            router(
                Arc::new(registry),
                Cluster::parse("dc1").unwrap(),
                stopping,
                None,
            ),
            stop,
        )
    }

    async fn raw(&self, method: &str, path: &str, body: Vec<u8>) -> (StatusCode, u64, Value) {
        let request = Request::builder()
            .method(method)
            .uri(path)
            .body(Body::from(body))
            .unwrap();
        let response = self.0.clone().oneshot(request).await.unwrap();
        let status = response.status();
        let index = response
            .headers()
            .get(INDEX_HEADER)
            .unwrap_or_else(|| panic!("{method} {path}: no index header"))
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        let bytes = response.into_body().collect().await.unwrap().to_bytes();
        (
            status,
            index,
            serde_json::from_slice(&bytes).unwrap_or(Value::Null),
        )
    }

    async fn call(
        &self,
        method: &str,
        path: &str,
        body: Option<Value>,
    ) -> (StatusCode, u64, Value) {
        self.raw(
            method,
            path,
            body.map(|b| b.to_string().into_bytes()).unwrap_or_default(),
        )
        .await
    }

    async fn put(&self, path: &str, body: Value) -> (StatusCode, Value) {
        let (status, _, body) = self.call("PUT", path, Some(body)).await;
        (status, body)
    }
}

const WEB1: &str = "/v1/services/web/instances/web-1";

#[tokio::test]
async fn register_get_list_deregister() {
    let api = Api::new().await;
    let body = json!({
        "address": "10.0.0.5", "port": 8080, "weight": 50, "priority": 1, "tags": ["v2", "V2", "canary"],
        "meta": {"version": "1.4"}, "cluster": "dc2", "ttl": "30s", "status": "UP"
    });
    let (status, index, reply) = api.call("PUT", WEB1, Some(body)).await;
    assert_eq!(
        (status, index, reply["index"].as_u64()),
        (StatusCode::OK, 1, Some(1))
    );
    let i = &reply["instance"];
    assert_eq!(
        i["tags"],
        json!(["canary", "v2"]),
        "tags are lower-cased, sorted, unique"
    );
    assert_eq!(
        (
            i["ttl"].as_str(),
            i["cluster"].as_str(),
            i["weight"].as_u64()
        ),
        (Some("30s"), Some("dc2"), Some(50))
    );

    let (status, _, got) = api.call("GET", WEB1, None).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(got["instance"], *i);

    // Defaults for everything optional.
    let (_, reply) = api
        .put(
            "/v1/services/web/instances/web-2",
            json!({"address": "::1", "port": 1}),
        )
        .await;
    let d = &reply["instance"];
    assert_eq!(
        (
            d["weight"].as_u64(),
            d["priority"].as_u64(),
            d["ttl"].as_str(),
            d["status"].as_str(),
            d["cluster"].as_str()
        ),
        (Some(100), Some(10), Some("5s"), Some("UP"), Some("dc1"))
    );

    let (_, index, list) = api.call("GET", "/v1/services", None).await;
    assert_eq!(index, 2);
    assert_eq!(list["services"][0]["name"], "web");
    assert_eq!(list["services"][0]["instances"], 2);
    let (_, _, service) = api.call("GET", "/v1/services/WEB", None).await;
    assert_eq!(service["instances"].as_array().unwrap().len(), 2);
    assert_eq!(service["settings"]["lb"], "weighted");

    let (status, index, _) = api.call("DELETE", WEB1, None).await;
    assert_eq!((status, index), (StatusCode::OK, 3));
    let (status, _, err) = api.call("GET", WEB1, None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].as_str().unwrap().contains("web-1"));
    assert_eq!(
        api.call("DELETE", WEB1, None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn every_bad_field_is_named_and_changes_nothing() {
    let api = Api::new().await;
    let good = json!({"address": "10.0.0.5", "port": 8080});
    assert_eq!(api.put(WEB1, good.clone()).await.0, StatusCode::OK);
    let (_, before_index, before) = api.call("GET", WEB1, None).await;

    let with = |key: &str, value: Value| {
        let mut body = good.clone();
        body[key] = value;
        body
    };
    let cases: Vec<(Value, &str)> = vec![
        (json!({"port": 8080}), "address"),
        (with("address", json!("10.0.0.300")), "address"),
        (with("address", json!("web.example.com")), "address"),
        (with("address", json!("0.0.0.0")), "address"),
        (with("address", json!(17)), "address"),
        (json!({"address": "10.0.0.5"}), "port"),
        (with("port", json!(0)), "port"),
        (with("port", json!(65536)), "port"),
        (with("port", json!("80")), "port"),
        (with("weight", json!(0)), "weight"),
        (with("weight", json!(70000)), "weight"),
        (with("weight", json!(-1)), "weight"),
        (with("weight", json!(1.5)), "weight"),
        (with("priority", json!(65536)), "priority"),
        (with("tags", json!("v2")), "tags"),
        (with("tags", json!(["ok", "not ok"])), "tags[1]"),
        (with("tags", json!(["ok", 7])), "tags[1]"),
        (with("tags", json!(["_v2"])), "tags[0]"),
        (with("meta", json!({"k": 1})), "meta.k"),
        (with("meta", json!({"a=b": "c"})), "meta.a=b"),
        (
            with("meta", json!({"x".repeat(33): "v"})),
            &*Box::leak(format!("meta.{}", "x".repeat(33)).into_boxed_str()),
        ),
        (
            with(
                "meta",
                json!(
                    (0..40)
                        .map(|n| (format!("k{n}"), json!("v".repeat(30))))
                        .collect::<serde_json::Map<String, Value>>()
                ),
            ),
            "meta",
        ),
        (with("cluster", json!("service")), "cluster"),
        (with("cluster", json!("dc_2")), "cluster"),
        (with("ttl", json!("soon")), "ttl"),
        (with("ttl", json!("500ms")), "ttl"),
        (with("ttl", json!("2days")), "ttl"),
        (with("status", json!("DOWN")), "status"),
        (with("id", json!("web-2")), "id"),
        (with("colour", json!("blue")), "colour"),
        (with("lease", json!("10ms")), "lease"),
        (with("lease", json!("soon")), "lease"),
        (
            with("deregister_after", json!("30days")),
            "deregister_after",
        ),
        (with("checks", json!("tcp")), "checks"),
        (with("checks", json!([{"tcp": "no-port"}])), "checks[0].tcp"),
        (
            with("checks", json!([{"tcp": "h:1"}, {"http": "ftp://x/"}])),
            "checks[1].http",
        ),
        (with("checks", json!([{}])), "checks[0]"),
        (
            with("checks", json!([{"tcp": "h:1", "http": "http://h/"}])),
            "checks[0]",
        ),
        (
            with("checks", json!([{"tcp": "h:1", "interval": "10ms"}])),
            "checks[0].interval",
        ),
        (
            with(
                "checks",
                json!([{"tcp": "h:1", "interval": "1s", "timeout": "2s"}]),
            ),
            "checks[0].timeout",
        ),
        (
            with("checks", json!([{"tcp": "h:1", "rise": 0}])),
            "checks[0].rise",
        ),
        (with("initial", json!("maybe")), "initial"),
    ];
    for (body, field) in cases {
        let (status, index, err) = api.call("PUT", WEB1, Some(body.clone())).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{body}");
        assert_eq!(err["field"], field, "{body}: {err}");
        assert!(
            err["error"].as_str().is_some_and(|e| !e.is_empty()),
            "{body}"
        );
        assert_eq!(index, before_index, "{body}");
    }
    // Bad names in the path.
    for (path, field) in [
        ("/v1/services/we_b/instances/web-1", "service"),
        ("/v1/services/web/instances/-web", "id"),
        (
            &*format!("/v1/services/{}/instances/x", "a".repeat(64)),
            "service",
        ),
    ] {
        let (status, _, err) = api.call("PUT", path, Some(good.clone())).await;
        assert_eq!(
            (status, err["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{path}"
        );
    }
    let (_, after_index, after) = api.call("GET", WEB1, None).await;
    assert_eq!((after_index, after), (before_index, before));
}

#[tokio::test]
async fn malformed_and_oversized_bodies_are_refused() {
    let api = Api::new().await;
    for body in [&b"{\"address\": "[..], b"not json", b"[1, 2]", b"\"text\""] {
        let (status, _, err) = api.raw("PUT", WEB1, body.to_vec()).await;
        assert_eq!(
            status,
            StatusCode::BAD_REQUEST,
            "{}",
            String::from_utf8_lossy(body)
        );
        assert!(err["error"].is_string());
    }
    let mut big = json!({"address": "10.0.0.5", "port": 80})
        .to_string()
        .into_bytes();
    big.truncate(big.len() - 1);
    big.extend_from_slice(b", \"pad\": \"");
    big.resize(MAX_BODY + 10, b'x');
    big.extend_from_slice(b"\"}");
    let (status, index, err) = api.raw("PUT", WEB1, big).await;
    assert_eq!(status, StatusCode::PAYLOAD_TOO_LARGE);
    assert!(err["error"].as_str().unwrap().contains("65536"));
    assert_eq!(index, 0);
    assert_eq!(api.call("GET", WEB1, None).await.0, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn conditional_writes_conflict_with_409() {
    let api = Api::new().await;
    let body = json!({"address": "10.0.0.5", "port": 80});
    assert_eq!(
        api.put(&format!("{WEB1}?cas=0"), body.clone()).await.0,
        StatusCode::OK
    );
    let (status, err) = api
        .put(
            &format!("{WEB1}?cas=0"),
            json!({"address": "10.0.0.6", "port": 80}),
        )
        .await;
    assert_eq!(status, StatusCode::CONFLICT);
    assert!(err["error"].as_str().unwrap().contains("index 1"), "{err}");
    assert_eq!(
        api.call("DELETE", &format!("{WEB1}?cas=7"), None).await.0,
        StatusCode::CONFLICT
    );
    let (status, _, err) = api.call("DELETE", &format!("{WEB1}?cas=x"), None).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("cas"))
    );
    assert_eq!(
        api.call("DELETE", &format!("{WEB1}?cas=1"), None).await.0,
        StatusCode::OK
    );
}

#[tokio::test]
async fn registering_the_same_thing_twice_keeps_the_index() {
    let api = Api::new().await;
    let body = json!({"address": "10.0.0.5", "port": 80, "tags": ["a"]});
    api.put(WEB1, body.clone()).await;
    let (_, index, _) = api.call("PUT", WEB1, Some(body)).await;
    assert_eq!(index, 1);
}

#[tokio::test]
async fn service_settings_are_validated() {
    let api = Api::new().await;
    let (status, reply) = api
        .put(
            "/v1/services/web",
            json!({"lb": "round_robin", "failover": ["dc2"]}),
        )
        .await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(reply["settings"]["lb"], "round_robin");
    // A service with settings and no instances exists.
    assert_eq!(
        api.call("GET", "/v1/services/web", None).await.0,
        StatusCode::OK
    );
    for (body, field) in [
        (json!({"lb": "fastest"}), "lb"),
        (json!({"failover": ["instance"]}), "failover[0]"),
        (json!({"fail_open": "yes"}), "fail_open"),
        (json!({"weights": {}}), "weights"),
    ] {
        let (status, err) = api.put("/v1/services/web", body.clone()).await;
        assert_eq!(
            (status, err["field"].as_str()),
            (StatusCode::UNPROCESSABLE_ENTITY, Some(field)),
            "{body}"
        );
    }
    assert_eq!(
        api.call("GET", "/v1/services/nope", None).await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn health_ready_and_unknown_routes() {
    let api = Api::new().await;
    assert_eq!(api.call("GET", "/health", None).await.0, StatusCode::OK);
    let (status, _, ready) = api.call("GET", "/ready", None).await;
    assert_eq!(
        (status, ready["store"].as_str()),
        (StatusCode::OK, Some("memory"))
    );
    let (status, _, err) = api.call("GET", "/v2/nothing", None).await;
    assert_eq!(status, StatusCode::NOT_FOUND);
    assert!(err["error"].is_string());
    let (status, _, err) = api.call("POST", WEB1, None).await;
    assert_eq!(status, StatusCode::METHOD_NOT_ALLOWED);
    assert!(err["error"].is_string());
}

#[tokio::test]
async fn status_changes_only_the_status() {
    let api = Api::new().await;
    let body = json!({"address": "10.0.0.5", "port": 80, "weight": 7, "tags": ["v2"]});
    api.put(WEB1, body).await;
    let status_path = format!("{WEB1}/status");
    let (status, index, reply) = api
        .call(
            "PUT",
            &status_path,
            Some(json!({"status": "out_of_service"})),
        )
        .await;
    assert_eq!((status, index), (StatusCode::OK, 2));
    let i = &reply["instance"];
    assert_eq!(
        (
            i["status"].as_str(),
            i["weight"].as_u64(),
            i["modify_index"].as_u64()
        ),
        (Some("OUT_OF_SERVICE"), Some(7), Some(2))
    );
    assert_eq!(i["tags"], json!(["v2"]));
    // The same status again changes nothing.
    assert_eq!(
        api.call(
            "PUT",
            &status_path,
            Some(json!({"status": "OUT_OF_SERVICE"}))
        )
        .await
        .1,
        2
    );
    for (body, code, field) in [
        (
            json!({"status": "DOWN"}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("status"),
        ),
        (json!({}), StatusCode::UNPROCESSABLE_ENTITY, Some("status")),
        (
            json!({"status": "UP", "weight": 1}),
            StatusCode::UNPROCESSABLE_ENTITY,
            Some("weight"),
        ),
    ] {
        let (status, _, err) = api.call("PUT", &status_path, Some(body.clone())).await;
        assert_eq!((status, err["field"].as_str()), (code, field), "{body}");
    }
    let (status, _, _) = api
        .call(
            "PUT",
            "/v1/services/web/instances/nope/status",
            Some(json!({"status": "UP"})),
        )
        .await;
    assert_eq!(status, StatusCode::NOT_FOUND);
}

#[tokio::test]
async fn blocking_reads_wake_on_a_change_and_time_out_without_one() {
    let api = Arc::new(Api::new().await);
    api.put(WEB1, json!({"address": "10.0.0.5", "port": 80}))
        .await;
    // Times out with the same index when nothing changes.
    let (status, index, _) = api
        .call("GET", "/v1/services/web?index=1&wait=50ms", None)
        .await;
    assert_eq!((status, index), (StatusCode::OK, 1));
    // Wakes on a change, for each blocking route.
    for (n, route) in ["/v1/services", "/v1/services/web", WEB1]
        .into_iter()
        .enumerate()
    {
        let current = api.call("GET", "/v1/services", None).await.1;
        let (api2, path) = (api.clone(), format!("{route}?index={current}&wait=1m"));
        let waiting = tokio::spawn(async move { api2.call("GET", &path, None).await });
        tokio::task::yield_now().await;
        assert!(
            !waiting.is_finished(),
            "{route} blocks while nothing changes"
        );
        api.put(WEB1, json!({"address": "10.0.0.5", "port": 90 + n}))
            .await;
        let (status, index, _) = waiting.await.unwrap();
        assert_eq!((status, index), (StatusCode::OK, current + 1), "{route}");
    }
    // An index already passed answers at once.
    let (_, index, _) = api.call("GET", "/v1/services?index=0&wait=10m", None).await;
    assert!(index >= 4);
    let (status, _, err) = api.call("GET", "/v1/services?index=x", None).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("index"))
    );
    let (status, _, err) = api
        .call("GET", "/v1/services?index=1&wait=soon", None)
        .await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("wait"))
    );
}

/// Reads SSE events (`event` name and `id`) from a watch response until
/// `count` have arrived.
async fn sse_events(body: &mut axum::body::Body, count: usize) -> Vec<(String, u64, Value)> {
    let mut text = String::new();
    let mut events = Vec::new();
    while events.len() < count {
        let frame = tokio::time::timeout(std::time::Duration::from_secs(10), body.frame())
            .await
            .expect("an event within 10 s")
            .expect("the stream goes on")
            .unwrap();
        if let Ok(data) = frame.into_data() {
            text.push_str(&String::from_utf8_lossy(&data));
        }
        while let Some(end) = text.find("\n\n") {
            let block: String = text.drain(..end + 2).collect();
            let field = |name: &str| {
                block.lines().find_map(|l| {
                    l.strip_prefix(&format!("{name}:"))
                        .map(|v| v.trim().to_string())
                })
            };
            if let (Some(kind), Some(id), Some(data)) = (field("event"), field("id"), field("data"))
            {
                events.push((
                    kind,
                    id.parse().unwrap(),
                    serde_json::from_str(&data).unwrap(),
                ));
            }
        }
    }
    events
}

impl Api {
    async fn watch(&self, query: &str, last_event_id: Option<u64>) -> axum::body::Body {
        let mut request = Request::builder().uri(format!("/v1/watch{query}"));
        if let Some(id) = last_event_id {
            request = request.header("last-event-id", id.to_string());
        }
        let response = self
            .0
            .clone()
            .oneshot(request.body(Body::empty()).unwrap())
            .await
            .unwrap();
        assert_eq!(response.status(), StatusCode::OK);
        response.into_body()
    }
}

#[tokio::test]
async fn the_watch_stream_resumes_without_missing_a_change() {
    let api = Api::new().await;
    api.put(WEB1, json!({"address": "10.0.0.5", "port": 80}))
        .await; // index 1
    let mut all = api.watch("?index=0", None).await;
    let mut only_api = api.watch("?service=api&index=0", None).await;
    assert_eq!(
        sse_events(&mut all, 1).await[0].0,
        "put",
        "replays from the index given"
    );
    api.put(
        "/v1/services/web/instances/web-2",
        json!({"address": "10.0.0.6", "port": 80}),
    )
    .await; // 2
    api.call("DELETE", WEB1, None).await; // 3
    api.put("/v1/services/api", json!({"lb": "hash"})).await; // 4
    let seen = sse_events(&mut all, 3).await;
    let kinds: Vec<(&str, u64)> = seen.iter().map(|(k, i, _)| (k.as_str(), *i)).collect();
    assert_eq!(kinds, [("put", 2), ("delete", 3), ("settings", 4)]);
    assert_eq!(seen[0].2["instance"]["address"], "10.0.0.6");
    assert_eq!(seen[1].2["id"], "web-1");
    // Filtered to one service.
    let api_only = sse_events(&mut only_api, 1).await;
    assert_eq!((api_only[0].0.as_str(), api_only[0].1), ("settings", 4));
    // Reconnecting with the last id seen gets exactly what came after.
    let mut resumed = api.watch("", Some(2)).await;
    let after: Vec<u64> = sse_events(&mut resumed, 2)
        .await
        .iter()
        .map(|e| e.1)
        .collect();
    assert_eq!(after, [3, 4]);
    // An import tells watchers to start over.
    let (_, _, export) = api.call("GET", "/v1/export", None).await;
    api.call("PUT", "/v1/import?replace=true", Some(export))
        .await;
    assert_eq!(sse_events(&mut all, 1).await[0].0, "reset");
    let (status, _, err) = api.call("GET", "/v1/watch?index=soon", None).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::BAD_REQUEST, Some("index"))
    );
}

#[tokio::test]
async fn heartbeats_renew_leases_and_name_what_is_wrong() {
    let api = Api::new().await;
    let hb = format!("{WEB1}/heartbeat");
    assert_eq!(
        api.call("PUT", &hb, None).await.0,
        StatusCode::NOT_FOUND,
        "unknown: register again"
    );
    api.put(WEB1, json!({"address": "10.0.0.5", "port": 80}))
        .await;
    let (status, _, err) = api.call("PUT", &hb, None).await;
    assert_eq!(
        (status, err["field"].as_str()),
        (StatusCode::UNPROCESSABLE_ENTITY, Some("lease"))
    );
    api.put(
        WEB1,
        json!({"address": "10.0.0.5", "port": 80, "lease": "10s", "deregister_after": "1m"}),
    )
    .await;
    let (status, index, reply) = api.call("PUT", &hb, None).await;
    assert_eq!(
        (status, index),
        (StatusCode::OK, 2),
        "a heartbeat is not a write"
    );
    assert_eq!(
        (
            reply["instance"]["lease"].as_str(),
            reply["instance"]["deregister_after"].as_str(),
            reply["instance"]["health"].as_str()
        ),
        (Some("10s"), Some("1m"), Some("passing"))
    );
    assert!(
        reply["lease_remaining"]
            .as_str()
            .is_some_and(|r| r.ends_with('s') || r.ends_with("ms")),
        "{reply}"
    );
}
