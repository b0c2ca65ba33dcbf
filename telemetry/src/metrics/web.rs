//! What the web front door (`labssh web`) records: requests by route and status
//! class, their time to a response head, open connections and WebSockets, the
//! bytes relayed into containers and back, and its service lookups.

use std::time::Duration;

use opentelemetry::KeyValue;

use super::registry::{metrics, Active};

/// What a front door request was for: a label value of a fixed set.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebRoute {
    /// A student's service, by host or `/s/NAME/`.
    Service,
    /// The portal page.
    Portal,
    /// The login form or a login.
    Login,
    /// A logout.
    Logout,
    /// A portal form's start or stop.
    Action,
    /// Anything else (not found, wrong host).
    Other,
}

impl WebRoute {
    /// The `route` label.
    pub fn as_str(self) -> &'static str {
        match self {
            WebRoute::Service => "service",
            WebRoute::Portal => "portal",
            WebRoute::Login => "login",
            WebRoute::Logout => "logout",
            WebRoute::Action => "action",
            WebRoute::Other => "other",
        }
    }
}

/// A request of `route` was answered with `status` (its response head) `elapsed`
/// after it arrived.
pub fn web_request(route: WebRoute, status: u16, elapsed: Duration) {
    let class = match status {
        100..=199 => "1xx",
        200..=299 => "2xx",
        300..=399 => "3xx",
        400..=499 => "4xx",
        _ => "5xx",
    };
    let m = metrics();
    let route = KeyValue::new("route", route.as_str());
    m.web_requests
        .add(1, &[route.clone(), KeyValue::new("status", class)]);
    m.web_request_seconds
        .record(elapsed.as_secs_f64(), &[route]);
}

/// A browser's connection is open until the guard drops.
pub fn web_connection() -> Active {
    let m = metrics();
    m.web_connections_active.add(1, &[]);
    Active(&m.web_connections_active)
}

/// A browser's connection was closed at once: the limit `reason` was full.
pub fn web_refused(reason: &'static str) {
    metrics()
        .web_refused
        .add(1, &[KeyValue::new("reason", reason)]);
}

/// An upgraded connection (a WebSocket) is relayed until the guard drops.
pub fn web_websocket() -> Active {
    let m = metrics();
    m.web_websockets_active.add(1, &[]);
    Active(&m.web_websockets_active)
}

/// `bytes` went to the service (`to_service`) or back to the browser.
pub fn web_relayed(to_service: bool, bytes: usize) {
    let direction = if to_service {
        "to_service"
    } else {
        "to_browser"
    };
    metrics()
        .web_relayed_bytes
        .add(bytes as u64, &[KeyValue::new("direction", direction)]);
}

/// A service lookup by name was answered from the cache (`hit`) or not.
pub fn web_service_lookup(hit: bool) {
    metrics().web_service_lookups.add(
        1,
        &[KeyValue::new("result", if hit { "hit" } else { "miss" })],
    );
}
