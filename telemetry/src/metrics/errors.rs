//! Failures of every role, by component and kind.

use opentelemetry::KeyValue;

use super::registry::metrics;

/// Which role failed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    /// The SSH proxy.
    Proxy,
    /// The controller.
    Controller,
    /// A backend agent.
    Agent,
}

impl Component {
    /// Its name in metrics' labels and audit lines.
    pub fn as_str(self) -> &'static str {
        match self {
            Component::Proxy => "proxy",
            Component::Controller => "controller",
            Component::Agent => "agent",
        }
    }
}

/// A failure of `kind` (a fixed word such as "session_start_timeout").
pub fn error(component: Component, kind: &'static str) {
    let component = component.as_str();
    metrics().errors.add(
        1,
        &[
            KeyValue::new("component", component),
            KeyValue::new("kind", kind),
        ],
    );
}
