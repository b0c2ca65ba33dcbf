//! Every role's configuration file: it loads, or the error names what is wrong, and a
//! bad file never panics a role at start.

/// The same TOML given to the proxy, the controller and the agent.
pub fn config(data: &[u8]) {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Err(e) = labssh_proxy::Config::from_toml_str(text) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = labssh_controller::Config::from_toml_str(text) {
        assert!(!e.to_string().is_empty());
    }
    if let Err(e) = labssh_agent::Config::from_toml_str(text) {
        assert!(!e.to_string().is_empty());
    }
}
