//! `GET /v1/watch`: committed changes as server-sent events, resumable.
//!
//! Each event's SSE id is its registry index, so a client that reconnects
//! with `Last-Event-ID` (or `?index=N`) gets every change after it, in
//! order, none missed. A client too far behind gets a `reset` event: read
//! the state again (`/v1/services` or `/v1/export`) and go on from there.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use futures_util::Stream;
use serde_json::json;

use super::ApiState;
use super::error::ApiError;
use crate::registry::Registry;
use crate::registry::codec::{InstanceJson, settings_to_json};
use crate::registry::events::{ChangeEvent, EventKind};
use crate::registry::model::ServiceName;

/// How long the stream waits for a change before checking again.
const POLL: Duration = Duration::from_secs(30);

/// The SSE form of a change.
fn sse(event: &ChangeEvent) -> Event {
    let (kind, data) = match &event.kind {
        EventKind::Put { service, instance } => (
            "put",
            json!({ "index": event.index, "service": service, "instance": InstanceJson::new(service, instance) }),
        ),
        EventKind::Delete { service, id } => (
            "delete",
            json!({ "index": event.index, "service": service, "id": id }),
        ),
        EventKind::Settings { service, settings } => (
            "settings",
            json!({ "index": event.index, "service": service, "settings": settings_to_json(settings) }),
        ),
        EventKind::Reset => ("reset", json!({ "index": event.index })),
    };
    Event::default()
        .id(event.index.to_string())
        .event(kind)
        .data(data.to_string())
}

/// Where a watch starts: `?index=N`, else `Last-Event-ID`, else now.
fn start(
    registry: &Registry,
    params: &HashMap<String, String>,
    headers: &HeaderMap,
) -> Result<u64, ApiError> {
    if let Some(index) = params.get("index") {
        return index
            .parse()
            .map_err(|_| ApiError::bad_field("index", format!("{index:?} is not an index")));
    }
    if let Some(id) = headers.get("last-event-id") {
        let id = id.to_str().unwrap_or_default();
        return id
            .parse()
            .map_err(|_| ApiError::bad_field("Last-Event-ID", format!("{id:?} is not an index")));
    }
    Ok(registry.index())
}

/// `GET /v1/watch[?service=web][&index=N]`.
pub async fn watch(
    State(ApiState {
        registry, stopping, ..
    }): State<ApiState>,
    Query(params): Query<HashMap<String, String>>,
    headers: HeaderMap,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, ApiError> {
    let service = params
        .get("service")
        .map(|s| ServiceName::parse(s))
        .transpose()?;
    let from = start(&registry, &params, &headers)?;
    let stream = futures_util::stream::unfold(
        (registry, from, VecDeque::<ChangeEvent>::new(), stopping),
        move |(registry, mut last, mut pending, mut stopping)| {
            let service = service.clone();
            async move {
                loop {
                    if *stopping.borrow() {
                        return None;
                    }
                    if let Some(event) = pending.pop_front() {
                        return Some((Ok(sse(&event)), (registry, last, pending, stopping)));
                    }
                    match registry.changes_after(last) {
                        Some(events) => {
                            for event in events {
                                last = event.index;
                                let wanted = match (&service, event.kind.service()) {
                                    (Some(want), Some(about)) => want == about,
                                    _ => true,
                                };
                                if wanted {
                                    pending.push_back(event);
                                }
                            }
                        }
                        None => {
                            last = registry.index();
                            pending.push_back(ChangeEvent {
                                index: last,
                                kind: EventKind::Reset,
                            });
                        }
                    }
                    if pending.is_empty() {
                        tokio::select! {
                            _ = registry.wait_past(last, POLL) => {}
                            _ = stopping.wait_for(|stop| *stop) => return None,
                        }
                    }
                }
            }
        },
    );
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
